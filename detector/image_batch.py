"""One chunk of loaded images through the data path: resized and normalized into same-shaped NCHW batches
(prepare_images), run on the session (probability_maps), each map decoded into a DetectionResult
(detection_results)."""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np

from .inputs import LoadedImage
from .postprocess import boxes_from_probability_map
from .preprocess import (
    ResizeInfo,
    bucketed_size,
    group_by_shape,
    normalize_image,
    resize_for_detection,
    resize_to_shape,
)
from .result import INPUT_IMAGE_KEY, DetectionResult
from .session_run import run_session
from .settings import DetectionSettings
from .urls import shown_path


@dataclasses.dataclass
class PreparedImages:
    """One chunk ready for the network: each image's resize mapping and resized (height, width), and
    (indices, NCHW batch) groups."""

    infos: list[ResizeInfo]
    sizes: list[tuple[int, ...]]
    batches: list[tuple[list[int], np.ndarray]]


def _resize(
    item: LoadedImage, settings: DetectionSettings, input_shape: Optional[tuple[int, int, int]]
) -> tuple[np.ndarray, ResizeInfo]:
    if input_shape is not None:
        return resize_to_shape(item.image, input_shape[1], input_shape[2])
    path = shown_path(item.input_path)
    source = path if item.page_index is None else f"{path or 'image'} page {item.page_index}"  # for a warning
    return resize_for_detection(
        item.image, settings.limit_side_len, settings.limit_type, settings.max_side_limit, source
    )


def prepare_images(
    loaded: list[LoadedImage],
    settings: DetectionSettings,
    input_shape: Optional[tuple[int, int, int]],
    shape_bucket: Optional[int],
) -> PreparedImages:
    """Resize every image and normalize each same-shaped group straight into its batch tensor.

    With shape_bucket, each image goes into the top-left corner of a zero tensor of its bucketed
    size: 0 after normalization is the mean colour.
    """
    resized = [_resize(item, settings, input_shape) for item in loaded]
    batches = []
    for indices in group_by_shape([image for image, _ in resized], shape_bucket):
        height, width, channels = resized[indices[0]][0].shape
        net_height, net_width = bucketed_size(height, width, shape_bucket)
        shape = (len(indices), channels, net_height, net_width)
        # np.empty where every element is written: the unbucketed path stays as it was
        batch = np.empty(shape, np.float32) if shape_bucket is None else np.zeros(shape, np.float32)
        for slot, index in enumerate(indices):
            image = resized[index][0]
            slot_view = batch[slot, :, : image.shape[0], : image.shape[1]]
            normalize_image(image, settings.mean, settings.std, settings.scale, out=slot_view)
        batches.append((indices, batch))
    return PreparedImages([info for _, info in resized], [image.shape[:2] for image, _ in resized], batches)


def probability_maps(
    session: Any,
    input_name: str,
    output_name: str,
    prepared: PreparedImages,
    io_binding: bool,
    shrink_arena_above: Optional[int],
) -> list[Optional[np.ndarray]]:
    """session.run on each batch: each image's map (cropped back to the image where shape_bucket padded it),
    in input order."""
    maps: list[Optional[np.ndarray]] = [None] * len(prepared.sizes)
    for indices, batch in prepared.batches:
        batch_maps = run_session(
            session,
            input_name,
            output_name,
            batch,
            io_binding=io_binding,
            shrink_arena_above=shrink_arena_above,
        )
        for index, prob_map in zip(indices, batch_maps):
            height, width = prepared.sizes[index]
            if prob_map.shape != (height, width):  # padded by shape_bucket: the map of the image alone
                prob_map = np.ascontiguousarray(prob_map[:height, :width])
            maps[index] = prob_map
    return maps


def detection_results(
    loaded: list[LoadedImage], prepared: PreparedImages, maps: list[Optional[np.ndarray]], settings: DetectionSettings
) -> list[DetectionResult]:
    """The DB postprocess of every map, as PaddleX's results, in input order."""
    results = []
    for item, info, prob_map in zip(loaded, prepared.infos, maps):
        assert prob_map is not None  # every index is in exactly one batch
        polys, scores = boxes_from_probability_map(
            prob_map,
            info,
            thresh=settings.thresh,
            box_thresh=settings.box_thresh,
            unclip_ratio=settings.unclip_ratio,
            max_candidates=settings.max_candidates,
            use_dilation=settings.use_dilation,
            score_mode=settings.score_mode,
            box_type=settings.box_type,
        )
        results.append(
            DetectionResult(
                {  # PaddleX's keys, in its order
                    "input_path": item.input_path,
                    "page_index": item.page_index,
                    INPUT_IMAGE_KEY: item.image,
                    "dt_polys": polys,
                    "dt_scores": scores,
                }
            )
        )
    return results
