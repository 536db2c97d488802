"""Change detection without Ray: the task's loss, metrics and answers, the Siamese U-Net, the
Otsu baseline, the scene generator, and pair examples (reading, checking, splitting, augmenting)."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pyarrow.fs as pafs
import pytest
import torch
from PIL import Image
from sklearn.metrics import f1_score, jaccard_score, precision_score, recall_score

from lensops.config import AugmentConfig, ModelConfig, TrainConfig, load_config
from lensops.data import change_synthetic, samples
from lensops.data.catalog import example_files
from lensops.data.loading import _augment_batch
from lensops.data.pairs import inspect_example, list_examples
from lensops.data.splits import assign_splits, split_keys
from lensops.model import backbones, masks, siamese_unet
from lensops.model.change_baseline import difference_masks, otsu_threshold
from lensops.model.masks import CHANGE_CLASSES as CLASSES
from lensops.model.preprocess import PreprocessSpec, mask_to_uint8
from lensops.model.tasks import get_task
from lensops.model.tasks.change_detection import ChangeDetection, most_changed

TASK = ChangeDetection()
LITE0 = ModelConfig(task="change_detection", architecture="timm:tf_efficientnet_lite0", weights="efficientnet-lite0")


def _square(size: int, top: int, left: int, side: int) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    mask[top : top + side, left : left + side] = True
    return mask


# ---- the task ------------------------------------------------------------------------------


def test_the_task_is_built_in_and_names_its_files() -> None:
    assert isinstance(get_task("change_detection"), ChangeDetection)
    assert example_files(TASK) == ("before", "after", "mask")


def test_epoch_sums_give_the_same_iou_and_f1_as_the_test_metrics_and_as_sklearn() -> None:
    rng = np.random.default_rng(0)
    truth = rng.uniform(size=(3, 16, 16)) < 0.3
    probabilities = np.clip(truth * 0.6 + rng.uniform(size=truth.shape) * 0.5, 1e-4, 1 - 1e-4)
    logits = torch.logit(torch.from_numpy(probabilities)).unsqueeze(1)

    sums = {k: float(v) for k, v in TASK.batch_sums(logits, torch.from_numpy(truth)).items()}
    per_epoch = TASK.epoch_summary(sums, count=3)
    metrics = TASK.metrics(truth.astype(np.uint8), probabilities, list(CLASSES))

    flat_truth, flat_predicted = truth.ravel(), (probabilities >= 0.5).ravel()
    assert per_epoch["iou"] == pytest.approx(metrics["iou"]) == pytest.approx(jaccard_score(flat_truth, flat_predicted))
    assert per_epoch["f1"] == pytest.approx(metrics["f1"]) == pytest.approx(f1_score(flat_truth, flat_predicted))
    assert metrics["precision"] == pytest.approx(precision_score(flat_truth, flat_predicted))
    assert metrics["recall"] == pytest.approx(recall_score(flat_truth, flat_predicted))


def test_the_loss_is_lowest_for_the_true_mask_and_counts_an_empty_tile_predicted_empty_as_right() -> None:
    truth = torch.from_numpy(np.stack([_square(16, 2, 2, 6), np.zeros((16, 16), bool)])).float()
    loss = TASK.loss_fn(TrainConfig())

    right = loss((truth * 20 - 10).unsqueeze(1), truth)
    wrong = loss((10 - truth * 20).unsqueeze(1), truth)
    unsure = loss(torch.zeros(2, 1, 16, 16), truth)

    assert right < 0.05 < unsure < wrong


def test_an_answer_carries_the_mask_as_png_its_changed_fraction_and_its_regions_largest_first() -> None:
    changed = _square(32, 2, 3, 4) | _square(32, 20, 10, 8)
    probabilities = np.where(changed, 0.9, 0.2)[None]

    [answer] = TASK.answers(probabilities, list(CLASSES))

    assert answer["prediction"] == "changed"
    assert answer["changed_fraction"] == pytest.approx((16 + 64) / 32**2)
    assert answer["regions"] == [{"box": [10, 20, 18, 28], "area": 64}, {"box": [3, 2, 7, 6], "area": 16}]
    assert np.array_equal(masks.from_png(answer["mask"]), changed)
    assert answer["confidence"] == pytest.approx(np.where(changed, 0.9, 0.8).mean())


def test_an_answer_without_change_says_unchanged_and_agrees_with_itself_but_not_with_a_changed_one() -> None:
    [empty] = TASK.answers(np.full((1, 8, 8), 0.1), list(CLASSES))
    [full] = TASK.answers(np.full((1, 8, 8), 0.9), list(CLASSES))

    assert (empty["prediction"], empty["regions"], empty["changed_fraction"]) == ("unchanged", [], 0.0)
    assert TASK.agrees(empty, empty) and TASK.agrees(full, full)
    assert not TASK.agrees(empty, full)


def test_the_config_needs_a_timm_encoder_and_the_torch_runtime() -> None:
    with pytest.raises(ValueError, match="timm:<name>"):
        load_config(overrides=["model.task=change_detection", "train.early_stopping_metric=val_iou"])
    base = ["model.task=change_detection", "model.architecture=timm:resnet18", "train.early_stopping_metric=val_iou"]
    with pytest.raises(ValueError, match="answer on torch"):
        load_config(overrides=[*base, "serve.runtime=onnxruntime"])
    assert load_config(overrides=base).model.task == "change_detection"


# ---- the network --------------------------------------------------------------------------


def test_the_siamese_unet_draws_a_full_size_mask_the_same_whichever_date_comes_first() -> None:
    network = TASK.build_network(LITE0.model_copy(update={"weights": "none"}), CLASSES).eval()
    before, after = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64)

    with torch.inference_mode():
        forward, backward = network(before, after), network(after, before)

    assert forward.shape == (2, 1, 64, 64)
    torch.testing.assert_close(forward, backward)


def test_the_encoder_takes_the_offline_lite0_weights_and_the_decoder_learns_at_the_full_rate() -> None:
    network = TASK.build_network(LITE0, CLASSES)
    classifier = backbones.build_model(LITE0, torch.nn.Identity)

    torch.testing.assert_close(network.encoder.conv_stem.weight, classifier.conv_stem.weight)
    fresh, encoder = backbones.parameter_groups(network, lr=1.0, backbone_lr_scale=0.1)
    assert (fresh["lr"], encoder["lr"]) == (1.0, pytest.approx(0.1))
    assert {id(p) for p in encoder["params"]} == {id(p) for p in network.encoder.parameters()}
    assert {id(p) for p in fresh["params"]} == {id(p) for p in network.decoder.parameters()}


def test_a_torchvision_architecture_is_refused_with_what_to_use() -> None:
    with pytest.raises(ValueError, match="needs a timm:<name> encoder"):
        siamese_unet.encoder(ModelConfig(architecture="resnet18"), load_weights=False)


# ---- the baseline and the generator --------------------------------------------------------


def test_otsu_finds_the_gap_between_two_groups_of_values() -> None:
    rng = np.random.default_rng(1)
    values = np.concatenate([rng.normal(10, 2, 5000), rng.normal(60, 5, 500)])

    assert 18 < otsu_threshold(values) < 45


def test_the_difference_baseline_finds_a_planted_change_between_two_images() -> None:
    rng = np.random.default_rng(2)
    before = rng.integers(90, 110, (2, 3, 32, 32)).astype(np.uint8)
    after = before.copy()
    after[0, :, 4:12, 4:12] = 250

    found = difference_masks(before, after)

    assert np.array_equal(found[0], _square(32, 4, 4, 8)) and not found[1].any()


def test_a_generated_scene_is_reproducible_from_its_seed_and_changes_only_part_of_it() -> None:
    first, again = (change_synthetic.scene_pair(np.random.default_rng([3, 0]), 128) for _ in range(2))
    other = change_synthetic.scene_pair(np.random.default_rng([4, 0]), 128)

    assert first.before.shape == (len(change_synthetic.BANDS), 128, 128)
    assert np.array_equal(first.after, again.after) and np.array_equal(first.mask, again.mask)
    assert not np.array_equal(first.before, other.before)
    assert 0 < first.mask.mean() < 0.5


def test_dates_differ_where_nothing_changed_so_a_plain_difference_is_not_enough() -> None:
    pairs = [change_synthetic.scene_pair(np.random.default_rng([5, i]), 128) for i in range(6)]
    before = np.stack([change_synthetic.to_uint8(p.before).transpose(2, 0, 1) for p in pairs])
    after = np.stack([change_synthetic.to_uint8(p.after).transpose(2, 0, 1) for p in pairs])
    truth = np.stack([p.mask for p in pairs])

    baseline = TASK.metrics(truth, difference_masks(before, after).astype(float), list(CLASSES))

    assert baseline["iou"] < 0.6  # seasons, light and haze make unchanged pixels differ too


# ---- pair examples ----------------------------------------------------------------------------


@pytest.fixture
def tiles(tmp_path):
    samples.write_change(tmp_path, scenes=3, tile=32, seed=0, tiles_per_side=2)
    return tmp_path


def test_a_folder_of_tiles_lists_one_example_per_tile_grouped_by_scene(tiles) -> None:
    from_folder = list_examples(str(tiles), ("before", "after", "mask"))
    from_manifest = list_examples(str(tiles / "manifest.csv"), ("before", "after", "mask"))

    assert len(from_folder) == len(from_manifest) == 12
    assert from_folder["group"].nunique() == 3
    assert sorted(from_folder["after"]) == sorted(from_manifest["after"])
    assert from_folder.groupby("group")["group"].count().tolist() == [4, 4, 4]


def test_every_tile_of_a_scene_lands_in_the_same_split() -> None:
    rows = pd.DataFrame({"sha256": [f"h{i}" for i in range(400)], "group": [f"scene{i // 8}" for i in range(400)]})

    rows["split"] = assign_splits(split_keys(rows), load_config().data.split)

    assert rows.groupby("group")["split"].nunique().max() == 1
    assert set(rows["split"]) == {"train", "val", "test"}


def _inspect(tiles, tile: str) -> dict:
    row = {name: str(tiles / tile / f"{name}.png") for name in ("before", "after", "mask")}
    return inspect_example(pafs.LocalFileSystem(), row, ("before", "after", "mask"), min_side=8, max_pixels=10**6)


def test_a_good_example_is_kept_and_labelled_by_its_mask(tiles) -> None:
    result = _inspect(tiles, "scene000-000/r0c0")
    has_change = bool(np.asarray(Image.open(tiles / "scene000-000/r0c0/mask.png")).any())

    assert result["issue"] is None and (result["width"], result["height"]) == (32, 32)
    assert result["label"] == CLASSES[has_change] and len(result["sha256"]) == 64


@pytest.mark.parametrize(
    ("damage", "issue", "detail"),
    [
        (
            lambda d: Image.open(d / "after.png").crop((0, 0, 30, 32)).save(d / "after.png"),
            "mismatched",
            "sizes differ",
        ),
        (lambda d: Image.open(d / "after.png").convert("L").save(d / "after.png"), "mismatched", "bands differ"),
        (lambda d: Image.fromarray(np.full((32, 32), 128, np.uint8)).save(d / "mask.png"), "bad_mask", "mask is not"),
        (lambda d: (d / "after.png").unlink(), "unreadable", "after: cannot read"),
        (lambda d: (d / "before.png").write_bytes(b"not a picture"), "not_image", "before: "),
    ],
    ids=["size", "bands", "mask", "missing", "not-image"],
)
def test_a_bad_example_is_skipped_with_its_reason(tiles, damage, issue: str, detail: str) -> None:
    damage(tiles / "scene000-000" / "r0c0")

    result = _inspect(tiles, "scene000-000/r0c0")

    assert result["issue"] == issue and result["detail"].startswith(detail)


def test_an_example_without_a_file_for_one_name_is_skipped_as_missing(tiles) -> None:
    (tiles / "scene000-000/r0c0/mask.png").unlink()
    listed = list_examples(str(tiles), ("before", "after", "mask"))
    row = listed[listed["path"].str.endswith("scene000-000/r0c0")].iloc[0].to_dict()

    result = inspect_example(pafs.LocalFileSystem(), row, ("before", "after", "mask"), 8, 10**6)

    assert (result["issue"], result["detail"]) == ("missing_file", "no mask file")


# ---- preprocessing and augmentation of pairs -----------------------------------------------


def test_a_resized_mask_stays_binary_and_on_the_images_grid() -> None:
    spec = PreprocessSpec(image_size=16, resize_size=16, mean=(0.5,) * 3, std=(0.5,) * 3)
    image = Image.fromarray(_square(64, 0, 0, 32).astype(np.uint8) * 255)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")

    mask = mask_to_uint8(buffer.getvalue(), spec)

    assert mask.shape == (16, 16) and set(np.unique(mask)) == {0, 1}
    assert np.array_equal(mask, _square(16, 0, 0, 8))


def test_one_draw_of_the_augmentation_moves_both_images_and_the_mask_and_recolours_only_the_images() -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(6)
    before = rng.integers(0, 255, (2, 3, 16, 16), dtype=np.uint8)
    batch = {"before": before, "after": before.copy(), "target": np.stack([_square(16, 0, 0, 4)] * 2).astype(np.uint8)}

    out = _augment_batch(batch, AugmentConfig(hflip=1.0, brightness=0.5), ("before", "after"), mask=True)

    assert np.array_equal(out["before"], out["after"])  # the same draw for both dates
    assert not np.array_equal(out["before"], before[..., ::-1])  # recoloured as well as flipped
    assert np.array_equal(out["target"], batch["target"][..., ::-1])  # flipped, values untouched


def test_the_examples_figure_shows_the_tiles_with_the_most_change() -> None:
    targets = np.stack([_square(16, 0, 0, side) for side in (0, 9, 2, 0, 12, 5, 1, 0)]).astype(np.uint8)

    assert most_changed(targets, 6).tolist() == [4, 1, 5, 2, 6, 0]
