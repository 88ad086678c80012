import importlib.metadata as md
import re


def test_exactly_one_opencv_distribution_and_it_is_headless():
    names = sorted(
        (d.metadata["Name"] or "").lower()
        for d in md.distributions()
        if (d.metadata["Name"] or "").lower().startswith("opencv")
    )
    assert names == ["opencv-python-headless"], names
    import cv2

    gui = re.search(r"^\s*GUI:\s*(\S+)", cv2.getBuildInformation(), re.M)
    assert gui and gui.group(1) == "NONE"  # no highgui windows, no libGL
