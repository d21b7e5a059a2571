"""Extraction on a local Ray instance (2 CPUs, 127.0.0.1 only): the same records and manifest as one
process, a killed worker's slide dealt again and done exactly once, and nothing listening outside
this machine."""

from __future__ import annotations

import csv
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from hist2rna_tf.cli import main
from hist2rna_tf.extract.cohort import MANIFEST, MANIFEST_LOCK, extract_cohort
from hist2rna_tf.extract.distributed import RayWorkers, connect

from files import sha256


def _listening() -> set[tuple[str, int]]:
    """(address, port) of every listening TCP socket on this machine (Linux /proc)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            if state == "0A":  # LISTEN
                address, port = local.split(":")
                found.add((address, int(port, 16)))
    return found


def _loopback(address_hex: str) -> bool:
    if len(address_hex) == 8:  # IPv4, little-endian: 127.x.x.x ends in 7F
        return address_hex.endswith("7F")
    return address_hex in ("00000000000000000000000001000000", "0000000000000000FFFF00000100007F")


@pytest.fixture(scope="module")
def local_ray():
    """A private Ray instance with 2 CPUs for this module, and what it opened to listen on."""
    import sys

    assert "ray" not in sys.modules  # the local-only switch is read when Ray is imported
    before = _listening()
    started = connect(None, num_cpus=2)
    import ray

    yield before
    if started:
        ray.shutdown()


def _slides(demo_cohort: Path, reference_data: Path) -> list[Path]:
    slides = [demo_cohort / "slides" / f"demo-0{i}.tiff" for i in range(1, 6)]
    return slides + [reference_data / "tcga_labels" / "LICENSE.txt"]  # not a slide: fails for its own reason, once



def _manifest(folder: Path) -> dict[str, dict]:
    """The manifest's rows by slide id, without what differs between runs (time, output folder)."""
    with open(folder / MANIFEST, newline="") as handle:
        rows = {row["slide_id"]: row for row in csv.DictReader(handle)}
    for row in rows.values():
        row.pop("seconds")
        row["record"] = Path(row["record"]).name if row["record"] else ""
    return rows


@pytest.fixture(scope="module")
def single_process(demo_cohort, reference_data, tiny_extractor, tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    extract_cohort([str(p) for p in _slides(demo_cohort, reference_data)], out,
                   annotations_dir=demo_cohort / "annotations", extractor=tiny_extractor)
    return out / tiny_extractor.backbone.name


@pytest.mark.slow
def test_ray_extraction_equals_one_process(local_ray, demo_cohort, reference_data, tiny_extractor, single_process,
                                           tmp_path):
    """`hist2rna extract --ray`: two workers of one CPU; every record the same bytes as one process's,
    the same manifest rows (the bad file failed once, with the same reason), nothing listening
    beyond 127.0.0.1."""
    out = tmp_path / "ray"
    code = main(["extract", "--slides", *map(str, _slides(demo_cohort, reference_data)), "--out", str(out),
                 "--annotations", str(demo_cohort / "annotations"), "--backbone", tiny_extractor.config.backbone,
                 "--weights", "none", "--batch-size", "16", "--no-progress", "--ray", "--cpus-per-worker", "1"])
    assert code == 1  # one slide failed: the exit status says so
    folder = out / tiny_extractor.backbone.name
    assert _manifest(folder) == _manifest(single_process)
    done = [row for row in _manifest(folder).values() if row["status"] == "done"]
    assert len(done) == 5
    for row in done:
        assert sha256(folder / row["record"]) == sha256(single_process / row["record"])
    opened = _listening() - local_ray
    assert opened and all(_loopback(address) for address, _ in opened), opened


@pytest.mark.slow
def test_a_killed_workers_slide_is_dealt_again_and_done_once(local_ray, demo_cohort, reference_data, tiny_extractor,
                                                            single_process, tmp_path):
    out = tmp_path / "killed"
    workers = RayWorkers.start(tiny_extractor.config, cpus_per_worker=1)
    assert len(workers.actors) == 2
    outcome: dict = {}

    def run():
        try:
            outcome["results"] = extract_cohort([str(p) for p in _slides(demo_cohort, reference_data)], out,
                                                annotations_dir=demo_cohort / "annotations", extractor=workers)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            outcome["error"] = exc

    with workers:
        driver = threading.Thread(target=run)
        driver.start()
        deadline = time.monotonic() + 120
        while not workers.busy and time.monotonic() < deadline:
            time.sleep(0.005)
        worker, slide_id = next(iter(workers.busy.items()))
        killed_run = list(workers.running[worker])
        os.kill(workers.pids[worker], signal.SIGKILL)  # mid-slide: a demo slide takes ~1 s here
        driver.join(300)
    assert "error" not in outcome, outcome.get("error")
    # The slide it was on was dealt again, once (the slide read as busy, or the next of its run when
    # the kill came just as it moved on):
    assert sum(workers.retried.values()) == 1 and set(workers.retried) <= set(killed_run)
    results = outcome["results"]
    assert sorted(r.slide_id for r in results) == sorted(set(r.slide_id for r in results))  # each slide once
    folder = out / tiny_extractor.backbone.name
    assert _manifest(folder) == _manifest(single_process)  # the bad file: failed once, not retried
    for row in _manifest(folder).values():
        if row["status"] == "done":
            assert sha256(folder / row["record"]) == sha256(single_process / row["record"])
    assert [p.name for p in folder.glob(".*.lock")] == [MANIFEST_LOCK]  # every slide's claim released


@pytest.mark.parametrize("nodes, cpus_per_worker, expected", [
    ([{"CPU": 2}], 1, (2, 1, False)),  # the tests' instance: two workers of one CPU
    ([{"CPU": 2}], None, (1, 2, False)),  # default 4 CPUs a worker, capped at what a node has
    ([{"CPU": 16}, {"CPU": 16}], None, (8, 4, False)),  # counted node by node
    ([{"CPU": 6}, {"CPU": 6}], 4, (2, 4, False)),  # not 12 // 4 = 3: a worker cannot span nodes
    ([{"CPU": 64}, {"CPU": 64, "GPU": 8}, {"CPU": 32, "GPU": 8}], None, (16, 4, True)),  # a GPU each; the
    ([{"CPU": 64, "GPU": 8}], 2, (8, 2, True)),  # smallest CPU share of a GPU node, so every worker fits
])
def test_worker_layout_fits_every_node(nodes, cpus_per_worker, expected):
    from hist2rna_tf.extract.distributed import worker_layout

    assert worker_layout(nodes, cpus_per_worker) == expected


def test_without_ray_installed_the_message_says_how_to_get_it(monkeypatch):
    import sys

    from hist2rna_tf.errors import Hist2RNAError
    from hist2rna_tf.extract.distributed import _ray

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(Hist2RNAError, match=r"pip install 'hist2rna-tf\[ray\]'"):
        _ray()


@pytest.mark.slow
def test_ray_workers_extract_with_a_pathology_encoder(local_ray, tcga_tiles, tmp_path):
    """`--backbone uni` on Ray: the worker builds the full ViT-L (seeded random weights, as every
    process does) at UNI's own scale, and the record equals one process's."""
    import numpy as np

    from hist2rna_tf.extract.records import read_record

    folder = tmp_path / "tiles" / "TCGA-A2-A04R"
    folder.mkdir(parents=True)
    for tile in sorted((tcga_tiles).glob("TCGA-A2-A04R*.png"))[:4]:
        (folder / tile.name).write_bytes(tile.read_bytes())
    records = []
    for label, extra in (("one", []), ("ray", ["--ray", "--cpus-per-worker", "2"])):  # one worker
        assert main(["extract", "--slides", str(folder), "--out", str(tmp_path / label), "--backbone", "uni",
                     "--weights", "none", "--batch-size", "4", "--no-progress", *extra]) == 0  # 4 tiles, no padding
        records.append(read_record(tmp_path / label / "uni" / "TCGA-A2-A04R.tfrecord"))
    one, ray = records
    assert (ray.backbone, ray.feature_dim, ray.tile_size_px, ray.n_tiles) == ("uni", 1024, 224, 4)
    np.testing.assert_allclose(ray.feature, one.feature, rtol=1e-5, atol=1e-5 * np.abs(one.feature).max())


@pytest.mark.slow
def test_ray_spot_extraction_equals_one_process(local_ray, tiny_backbone_file, tmp_path):
    """`hist2rna extract-spots --ray` (issue 37): one worker of two CPUs, the samples dealt to it in turn;
    every record the same bytes as one process's (here, not in tests/spots: the module's Ray instance)."""
    samples = Path(__file__).resolve().parents[1] / "data" / "spots" / "hest_samples"
    base = ["extract-spots", "--hest", str(samples), "--samples", "SYN1", "SYN2", "--crop", "--backbone",
            str(tiny_backbone_file), "--weights", "none", "--no-progress"]
    assert main([*base, "--out", str(tmp_path / "one")]) == 0
    assert main([*base, "--out", str(tmp_path / "ray"), "--ray", "--cpus-per-worker", "2"]) == 0
    for sample in ("SYN1", "SYN2"):
        assert sha256(tmp_path / "ray" / "tiny" / f"{sample}.tfrecord") == sha256(tmp_path / "one" / "tiny" /
                                                                                 f"{sample}.tfrecord")
