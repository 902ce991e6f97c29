from bfm_prep.cli import main

main()
