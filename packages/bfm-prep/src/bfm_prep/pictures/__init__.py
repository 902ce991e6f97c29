"""Pictures a person looks at to judge the artifacts (matplotlib, Agg backend, PNG files).

Every picture is written atomically (rendered to memory, then a temporary file and a rename).
"""
