"""The cohort's tile stream: each slide opened once, by its plan, and closed when its tiles are read."""

from __future__ import annotations

from pathlib import Path

from hist2rna_tf.extract.cohort import extract_cohort
from hist2rna_tf.extract.slides import find_slides


def _demo_slides(cohort: Path, names=("demo-01", "demo-02", "demo-03")) -> list[Path]:
    return [cohort / "slides" / f"{n}.tiff" for n in names]


def _open_slide_files(folder: Path) -> list[str]:
    """Files under `folder` this process holds open (Linux: /proc/self/fd)."""
    import os

    held = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(folder)):
            held.append(target)
    return held


def test_each_slide_is_opened_once_and_closed_when_done(demo_cohort, tiny_extractor, tmp_path, monkeypatch):
    """The reader threads share a slide's one handle (opened by planning), and it is closed once the
    slide's tiles are read, and when a stream is abandoned midway: a cohort of thousands of slides
    never runs out of file handles."""
    import hist2rna_tf.extract.plan as plan_module
    import hist2rna_tf.extract.slides as slides_module
    from hist2rna_tf.extract.extractor import stream_features

    opened = []
    real_open = slides_module.open_slide
    for module in (plan_module, slides_module):
        monkeypatch.setattr(module, "open_slide", lambda ref: opened.append(ref.slide_id) or real_open(ref))
    slides = _demo_slides(demo_cohort)
    results = extract_cohort(slides, tmp_path / "all", annotations_dir=demo_cohort / "annotations",
                             extractor=tiny_extractor)
    assert [r.status for r in results] == ["done"] * 3
    assert sorted(opened) == ["demo-01", "demo-02", "demo-03"]  # once each, whatever the reader threads
    assert _open_slide_files(demo_cohort) == []
    refs = find_slides(slides)
    stream = stream_features(refs, tiny_extractor, [demo_cohort / "annotations" / f"{r.slide_id}.geojson" for r in refs])
    assert next(stream)[0] == 0  # the first slide is done; later ones are planned (open) or being read
    assert str(slides[0]) not in _open_slide_files(demo_cohort)
    stream.close()
    assert _open_slide_files(demo_cohort) == []
