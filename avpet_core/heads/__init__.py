"""Task heads on top of the dual-stream model's outputs."""

from avpet_core.heads.avel import AVELOutput, CMBSHead, CMBSHeadConfig, SegmentClassifier, segment_accuracy
from avpet_core.heads.avqa import AVQAHeadConfig, AVQAOutput, AVSTHead, QuestionGuidedAttention

__all__ = [
    "AVELOutput", "AVQAHeadConfig", "AVQAOutput", "AVSTHead", "CMBSHead", "CMBSHeadConfig",
    "QuestionGuidedAttention", "SegmentClassifier", "segment_accuracy",
]
