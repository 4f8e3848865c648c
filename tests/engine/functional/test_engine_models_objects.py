"""The class-agnostic ISNet actions (SegmentCommonImage, SegmentCommodity, SegmentFurniture, SegmentVehicle)
and PicWish's cut-out on known objects pasted onto textures: the IoU against the pasted truth."""

from __future__ import annotations

import numpy as np
import pytest

from segflow.errors import InputValidationError, UnknownActionError
from segflow_engine import actions
from tests.support import composites as c

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def logo_on_grass() -> c.Composite:
    return c.object_composite("logo", "grass")


@pytest.fixture(scope="module")
def horse_on_gravel() -> c.Composite:
    return c.object_composite("horse", "gravel", scale=0.8)


@pytest.mark.parametrize(
    ("action", "minimum"),
    [("SegmentCommonImage", 0.97), ("SegmentCommodity", 0.97)],  # measured 0.99 / 0.99
)
def test_salient_actions_cut_out_the_pasted_object(logo_on_grass, action, minimum):
    output = actions.run_image_action(action, {}, c.png_bytes(logo_on_grass.image), {})
    image = c.decode(output.image)
    assert image.mode == "RGBA" and image.size == (512, 512)
    score = c.iou(np.asarray(image)[..., 3], logo_on_grass.truth)
    assert score >= minimum, f"IoU {score:.3f}"


def test_return_form_mask_gives_a_single_channel_mask(horse_on_gravel):
    # SegmentCommonImage / SegmentCommodity (newer API): ReturnForm=mask → 1-channel mask.
    output = actions.run_image_action("SegmentCommodity", {"ReturnForm": "mask"}, horse_on_gravel.image, {})
    mask = c.decode(output.image)
    assert mask.mode == "L" and mask.size == (512, 512)
    score = c.iou(np.asarray(mask), horse_on_gravel.truth)
    assert score >= 0.95, f"IoU {score:.3f}"  # measured 0.98 (thin legs)


def test_furniture_answers_one_element_with_the_cutout(logo_on_grass):
    output = actions.run_image_action("SegmentFurniture", {}, logo_on_grass.image, {})
    assert output.image is None and len(output.elements) == 1
    element = output.elements[0]
    assert element.box is None and element.origin_image is None  # Elements[{ImageUrl}] only
    assert c.iou(c.alpha_of(element.image), logo_on_grass.truth) >= 0.97


def test_vehicle_element_carries_the_origin_image_and_the_cutout(horse_on_gravel):
    output = actions.run_image_action("SegmentVehicle", {}, c.png_bytes(horse_on_gravel.image), {})
    (element,) = output.elements
    assert element.origin_image is not None
    assert np.array_equal(np.asarray(c.decode(element.origin_image)), horse_on_gravel.image)
    assert c.iou(c.alpha_of(element.image), horse_on_gravel.truth) >= 0.95


def test_picwish_object_jpg_crop_on_a_colour_with_mask(horse_on_gravel):
    params = {"type": "object", "output_type": "1", "crop": "1", "format": "jpg", "bg_color": "ff0000"}
    output = actions.run_image_action("PicWish", params, horse_on_gravel.image, {})
    assert output.extension == "jpg" and output.mask is not None
    image, mask = c.decode(output.image), c.decode(output.mask)
    assert image.format == "JPEG" and image.mode == "RGB" and mask.mode == "L"
    # crop=1: both are cut to the subject's edges, which are the truth's bounding box within a few pixels.
    ys, xs = np.nonzero(horse_on_gravel.truth)
    true_w, true_h = xs.max() - xs.min() + 1, ys.max() - ys.min() + 1
    assert image.size == mask.size
    assert abs(image.size[0] - true_w) <= 6 and abs(image.size[1] - true_h) <= 6
    # Outside the subject the jpg shows bg_color.
    pixels, alpha = np.asarray(image).astype(int), np.asarray(mask)
    background = pixels[alpha == 0]
    assert np.abs(background - [255, 0, 0]).mean() < 12


def test_picwish_mask_only_output(logo_on_grass):
    output = actions.run_image_action(
        "PicWish", {"type": "object", "output_type": "3"}, logo_on_grass.image, {}
    )
    assert output.image is None and output.mask is not None
    mask = c.decode(output.mask)
    assert mask.mode == "L" and c.iou(np.asarray(mask), logo_on_grass.truth) >= 0.97


def test_picwish_auto_picks_person_or_object(logo_on_grass):
    person = c.person_composite("rocket")
    assert actions.run_image_action("PicWish", {}, person.image, {}).metadata["type"] == "person"
    output = actions.run_image_action("PicWish", {"type": ""}, logo_on_grass.image, {})
    assert output.metadata["type"] == "object"
    assert c.iou(c.alpha_of(output.image), logo_on_grass.truth) >= 0.97


@pytest.mark.parametrize(
    "params",
    [{"type": "car"}, {"output_type": "4"}, {"crop": "yes"}, {"format": "gif"}, {"bg_color": "red!"}],
)
def test_picwish_refuses_undocumented_parameter_values(params):
    with pytest.raises(InputValidationError) as info:
        actions.run_image_action("PicWish", params, np.zeros((64, 64, 3), np.uint8), {})
    assert info.value.code == "InvalidParameter"


def test_unknown_action_and_undecodable_image_are_refused():
    with pytest.raises(UnknownActionError):
        actions.run_image_action("SegmentSky", {}, np.zeros((64, 64, 3), np.uint8), {})
    with pytest.raises(InputValidationError) as info:
        actions.run_image_action("SegmentCommonImage", {}, b"not an image", {})
    assert info.value.code == "InvalidImage.Content"
