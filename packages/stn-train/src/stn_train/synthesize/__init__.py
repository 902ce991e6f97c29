"""Photo-realistic training faces from fitted photographs (``stn-train synthesize``): each
face's texture taken from its photo into the model's UV space, completed from the mirror side
and the model (:mod:`~stn_train.synthesize.texture`), re-rendered under new poses,
expressions and lights (:mod:`~stn_train.synthesize.views`) over the photo's background
(:mod:`~stn_train.synthesize.background`), with exact landmarks and theta in a training
manifest (:mod:`~stn_train.synthesize.driver`)."""

from stn_train.synthesize.driver import FaceRecord, SynthesisResult, synthesize_faces
from stn_train.synthesize.views import ViewRanges

__all__ = ["FaceRecord", "SynthesisResult", "synthesize_faces", "ViewRanges"]
