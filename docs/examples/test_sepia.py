from pathlib import Path

import pixmill_sepia
import pytest

from pixmill import PixmillError

# Load only this plugin into the harness's registry, app and runner.
pytestmark = pytest.mark.pixmill_plugins(pixmill_sepia)


def test_full_strength_tones_the_picture(run_tool, sample_images, assert_similar):
    outcome = run_tool("sepia", sample_images["photo-jpeg"], strength=1.0)
    expected = Path(__file__).with_name("golden") / "sepia-full.png"
    assert_similar(outcome, expected.read_bytes(), min_ssim=0.9)


def test_a_strength_out_of_range_is_refused(run_tool, sample_images):
    with pytest.raises(PixmillError) as refused:
        run_tool("sepia", sample_images["tiny-png"], strength=2)
    assert refused.value.code == "VALIDATION_ERROR"
    assert "strength" in refused.value.details["fields"]
