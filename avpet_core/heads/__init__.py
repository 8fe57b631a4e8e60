"""Task heads on top of the dual-stream model's outputs."""

from avpet_core.heads.avel import AVELOutput, CMBSHead, CMBSHeadConfig, SegmentClassifier, segment_accuracy

__all__ = ["AVELOutput", "CMBSHead", "CMBSHeadConfig", "SegmentClassifier", "segment_accuracy"]
