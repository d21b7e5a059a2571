"""No command destroys what the user did not ask it to: each case puts the user's own files where a careless
command would write (an output that is, holds or lies inside an input; `--overwrite` aimed at a folder that is
not a run; the working folder), runs the command, and finds it refused in one line with every byte still there."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from commandline import run
from files import snapshot


def _user_folder(folder: Path) -> Path:
    """A folder of the user's own files (not a run)."""
    (folder / "notes").mkdir(parents=True)
    (folder / "notes" / "lab-book.txt").write_text("three months of notes\n")
    (folder / "samples.csv").write_text("patient,site\nP1,A\n")
    return folder


@pytest.fixture
def work(tiny_run, tmp_path) -> dict[str, Path]:
    """A private copy of the tiny run's features and run, and its tables."""
    features = shutil.copytree(tiny_run / "features" / "tiny", tmp_path / "features")
    run_dir = shutil.copytree(tiny_run / "run", tmp_path / "run")
    return {"root": tmp_path, "features": features, "run": run_dir, "cohort": tiny_run / "cohort"}


def _train(w, *extra) -> list[str]:
    return ["train", "--features", str(w["features"]), "--expression", str(w["cohort"] / "expression.csv"),
            "--labels", str(w["cohort"] / "clinical.csv"), "--max-epochs", "1", *extra]


def _user_file(w, name: str) -> Path:
    """A file of the user's under the work folder (its folders made)."""
    path = w["root"] / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("patient_id,mine\nP1,1\n")
    return path


# id, the command (of the work folders), what must keep every byte (of the work folders), text of the one error line
CASES = [
    ("train --overwrite onto a folder of the user's files",
     lambda w: _train(w, "--out", str(_user_folder(w["root"] / "mine")), "--overwrite"),
     lambda w: [w["root"] / "mine"], ["mine holds 2 entries (notes/, samples.csv)", "--overwrite replaces only"]),
    ("train --out the features it reads, --overwrite",
     lambda w: _train(w, "--out", str(w["features"]), "--overwrite"),
     lambda w: [w["features"]], ["is the input --features"]),
    ("train --out a folder holding the features, --overwrite",
     lambda w: _train(w, "--out", str(w["root"]), "--overwrite"),
     lambda w: [w["features"], w["run"]], ["holds the input --features"]),
    ("baseline --out the run itself, --overwrite",
     lambda w: ["baseline", str(w["run"]), "--out", str(w["run"]), "--overwrite"],
     lambda w: [w["run"]], ["is the input RUN"]),
    ("baseline --overwrite onto another hist2RNA run",
     lambda w: ["baseline", str(w["run"]), "--out", str(shutil.copytree(w["run"], w["root"] / "run2")), "--overwrite"],
     lambda w: [w["root"] / "run2"], ["which is not a patch-based baseline run"]),
    ("crossval --out the features",
     lambda w: ["crossval", *_train(w)[1:], "--out", str(w["features"])],
     lambda w: [w["features"]], ["is the input --features"]),
    ("predict --out inside the features it reads",
     lambda w: ["predict", str(w["run"]), "--features", str(w["features"]), "--out", str(w["features"] / "p.csv")],
     lambda w: [w["features"]], ["lies inside the input --features"]),
    ("export --out the run",
     lambda w: ["export", str(w["run"]), "--out", str(w["run"] / "..")],
     lambda w: [w["run"]], ["holds the input RUN"]),
    ("spatial --out the features",
     lambda w: ["spatial", str(w["run"]), "--features", str(w["features"]), "--slides",
                str(w["cohort"] / "slides" / "demo-01.tiff"), "--out", str(w["features"])],
     lambda w: [w["features"]], ["is the input --features"]),
    ("subtype --out its own expression table",
     lambda w: ["subtype", "--expression", str(shutil.copy(w["cohort"] / "expression.csv", w["root"] / "e.csv")),
                "--out", str(w["root"] / "e.csv")],
     lambda w: [w["root"] / "e.csv"], ["is the input --expression"]),
    ("report --out the clinical table",
     lambda w: ["report", str(w["run"]), "--n-boot", "5", "--external-predictions", str(w["run"] / "test_predictions.csv"),
                "--clinical", str(shutil.copy(w["cohort"] / "clinical.csv", w["root"] / "c.csv")),
                "--out", str(w["root"] / "c.csv")],
     lambda w: [w["root"] / "c.csv"], ["is the input --clinical"]),
    ("predict --out a CSV of the user's",
     lambda w: ["predict", str(w["run"]), "--features", str(w["features"]), "--out", str(_user_file(w, "mine.csv"))],
     lambda w: [w["root"] / "mine.csv"], ["mine.csv exists", "--overwrite to replace it"]),
    ("subtype --out a CSV of the user's",
     lambda w: ["subtype", "--expression", str(w["cohort"] / "expression.csv"), "--out", str(_user_file(w, "m.csv"))],
     lambda w: [w["root"] / "m.csv"], ["m.csv exists", "--overwrite"]),
    ("report --out a folder of the user's whose files share the report's table names",
     lambda w: ["report", str(w["run"]), "--n-boot", "5", "--out", str(_user_file(w, "proj/genes.csv").parent / "r.html")],
     lambda w: [w["root"] / "proj"], ["holds genes.csv, which this output did not write"]),
    ("spatial --out a folder of the user's",
     lambda w: ["spatial", str(w["run"]), "--features", str(w["features"]), "--slides",
                str(w["cohort"] / "slides" / "demo-01.tiff"), "--out", str(_user_file(w, "maps/demo-01_PAM50.png").parent)],
     lambda w: [w["root"] / "maps"], ["holds 1 entry (demo-01_PAM50.png), which `hist2rna spatial` did not write"]),
    ("extract --out the slides folder",
     lambda w: ["extract", "--slides", str(shutil.copytree(w["cohort"] / "slides", w["root"] / "slides")), "--out",
                str(w["root"] / "slides"), "--backbone", str(w["root"].parent / "tiny.keras"), "--weights", "none"],
     lambda w: [w["root"] / "slides"], ["is the input --slides"]),
]


@pytest.mark.parametrize("name, command, kept, named", CASES, ids=[case[0] for case in CASES])
def test_every_byte_of_the_users_files_stays(name, command, kept, named, work, tiny_backbone_file, capsys):
    shutil.copy(tiny_backbone_file, work["root"].parent / "tiny.keras")
    args = command(work)
    before = snapshot(*kept(work))
    status, err = run(args, capsys)
    assert snapshot(*kept(work)) == before
    if not named:  # a command allowed to write there: it did, and nothing of the user's was touched but that
        return
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert status == 2 and len(errors) == 1, err
    for text in named:
        assert text in errors[0], (text, errors[0])


def test_normalize_never_writes_over_its_input(tcga_tiles, tmp_path, capsys):
    """Not as its output, through another spelling or a link, nor as one of --components' H and E images."""
    image = Path(shutil.copy(sorted(tcga_tiles.glob("*.png"))[0], tmp_path / "in_H.png"))
    (tmp_path / "link.png").symlink_to(image)
    before = snapshot(image)
    for output, extra in ((image, []), (tmp_path / "." / "in_H.png", []), (tmp_path / "link.png", []),
                          (tmp_path / "in.png", ["--components"])):
        status, err = run(["normalize", str(image), "--out", str(output), *extra], capsys)
        assert status == 2 and "is the input INPUT" in err, err
        assert snapshot(image) == before
    assert run(["normalize", str(image), "--out", str(tmp_path / "out.png"), "--components"], capsys)[0] == 0
    mine = snapshot(tmp_path / "out_H.png")  # now the user's: not replaced unasked, replaced when asked
    status, err = run(["normalize", str(image), "--out", str(tmp_path / "out.png"), "--components"], capsys)
    assert status == 2 and "exists; give another --out, or --overwrite" in err and snapshot(tmp_path / "out_H.png") == mine
    assert run(["normalize", str(image), "--out", str(tmp_path / "out.png"), "--components", "--overwrite"],
               capsys)[0] == 0


def test_a_file_output_is_replaced_when_asked_and_a_report_or_maps_folder_by_its_own_rerun(work, capsys):
    """--overwrite replaces the CSV; a report and spatial maps written again into their own folder replace
    their own files (not the user's)."""
    mine = _user_file(work, "mine.csv")
    assert run(["predict", str(work["run"]), "--features", str(work["features"]), "--out", str(mine), "--overwrite"],
               capsys)[0] == 0
    assert "mine" not in mine.read_text().splitlines()[0]
    for _ in range(2):
        status, err = run(["report", str(work["run"]), "--n-boot", "5", "--out", str(work["root"] / "rep" / "r.html"),
                           "--no-progress"], capsys)
        assert status == 0, err
    assert (work["root"] / "rep" / ".r.files").is_file()


def test_train_overwrite_of_the_working_folder_is_refused(work, capsys, monkeypatch):
    mine = _user_folder(work["root"] / "mine")
    before = snapshot(mine)
    for cwd, out in ((mine, "."), (mine, str(mine)), (mine / "notes", "..")):
        monkeypatch.chdir(cwd)
        status, err = run(_train(work, "--out", out, "--overwrite"), capsys)
        assert status == 2 and "working folder" in err and "Traceback" not in err, err
        assert snapshot(mine) == before


def test_an_empty_working_folder_is_not_a_run_folder_either(work, capsys, monkeypatch):
    empty = work["root"] / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    status, err = run(_train(work, "--out", "."), capsys)
    assert status == 2 and "is the working folder" in err and "--out run" in err
    assert empty.is_dir() and not any(empty.iterdir())


def test_overwrite_replaces_a_run_and_an_empty_folder(work, capsys):
    """What --overwrite is for still works: a run is replaced by the new one, an empty folder filled."""
    empty = work["root"] / "empty"
    empty.mkdir()
    for out in (work["run"], empty):
        status, err = run(_train(work, "--out", str(out), "--overwrite"), capsys)
        assert status == 0, err
        assert (out / "config.json").is_file()


def test_the_demo_never_touches_a_folder_that_is_not_a_demos(tmp_path, capsys):
    folder = _user_folder(tmp_path / "project")
    shutil.copytree(folder / "notes", folder / "run")  # the user's own run/ (any files)
    before = snapshot(folder)
    for extra in ([], ["--n-slides", "2"]):
        status, err = run(["demo", "--out", str(folder), *extra], capsys)
        assert status == 2 and "Traceback" not in err, err
        assert snapshot(folder) == before and sorted(p.name for p in folder.iterdir()) == ["notes", "run", "samples.csv"]
    assert "not a demo's" in run(["demo", "--out", str(folder)], capsys)[1]
