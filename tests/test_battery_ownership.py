"""Battery, family 1 (issue 24): writes through folders that are not vaekit's, scratch names.

A run's subfolder replaced by a symbolic link to a user's folder holding files of the names
vaekit writes there, or a user's entry named like vaekit's staging folder (``.vaekit-replaced``)
or temporary files (``.<name>.<random>.tmp``) placed in a run; then every command that writes
into a run. The user's entries must survive byte for byte, and the run must still evaluate.
"""

from __future__ import annotations

import os

import pytest
from battery import in_process as cli
from battery import (
    assert_contract,
    assert_ok,
    assert_unchanged,
    snapshot,
    user_folder,
)

# The names vaekit writes in each of a run's folders (run.py's OWNED), epochs 1 and 2.
FOLDER_NAMES = {
    "images": ["reconstruction_1.png", "samples_1.png", "reconstruction_2.png", "samples_2.png"],
    "latent": ["epoch_1.npy", "epoch_2.npy", "labels.npy"],
    "samplers": ["expost.json", "expost.safetensors", "two-stage.json", "two-stage.safetensors"],
    "onnx": ["encoder.onnx", "decoder.onnx", "export.json"],
}


def writer(name: str, run, data, tmp) -> list[object]:
    """The command line of a command that writes into ``run``."""
    return {
        "resume": ["train", data, "--out", run, "--resume", "--epochs", "2", "--no-report"],
        "fit-expost": ["fit-sampler", run, "--sampler", "expost"],
        "fit-two-stage": ["fit-sampler", run, "--sampler", "two-stage"],
        "sample-expost": ["sample", run, "--sampler", "expost", "-n", "4", "--out", tmp / "s.png"],
        "evaluate": ["evaluate", run, "--importance-samples", "10"],
        "report": ["report", run],
        "export": ["export", run, "--format", "onnx"],
        "card": ["card", run],
    }[name]


# Which writers reach into which folder.
LINK_WRITERS = {
    "images": ["resume", "report"],
    "latent": ["resume", "report"],
    "samplers": ["fit-expost", "fit-two-stage", "sample-expost"],
    "onnx": ["export"],
}

# (case id, where the user's entry goes (relative to the run), is it a folder, writers)
SCRATCH = [
    ("staging-folder", ".vaekit-replaced", True, ["resume", "evaluate", "fit-expost"]),
    ("temp-config", ".config.json.a1b2c3.tmp", False, ["resume", "evaluate"]),
    ("temp-model", ".model.safetensors.zz9.tmp", False, ["resume"]),
    ("temp-latent", "latent/.epoch_2.npy.q7.tmp", False, ["resume"]),
    ("temp-sampler", "samplers/.expost.json.x1.tmp", False, ["fit-expost"]),
    ("lock-named-folder", ".vaekit.lock.d", True, ["resume"]),
]

# What happens today, found by this battery (2022e48); a fix flips these and must drop the mark.
L = "writes through a link: "
S = "scratch names: "
TODAY: dict[str, str] = {}


def cases_links():
    for folder, writers in LINK_WRITERS.items():
        for w in writers:
            yield f"link-{folder}-{w}", folder, w


def cases_scratch():
    for cid, rel, is_dir, writers in SCRATCH:
        for w in writers:
            yield f"{cid}-{w}", rel, is_dir, w


def marked(cases):
    for case in cases:
        cid = case[0]
        marks = [pytest.mark.xfail(strict=True, reason=TODAY[cid])] if cid in TODAY else []
        yield pytest.param(*case[1:], id=cid, marks=marks)


def check_usable(run) -> None:
    assert_ok(cli("evaluate", run, "--importance-samples", "10"))


@pytest.mark.parametrize("folder, name", list(marked(cases_links())))
def test_a_folder_linked_to_a_users_folder_is_never_written_through(run_copy, battery_runs,
                                                                     tmp_path, folder, name):
    run = run_copy("plain")
    mine = user_folder(tmp_path / "mine", FOLDER_NAMES[folder] + ["notes.txt"])
    if (run / folder).exists():
        for p in (run / folder).iterdir():  # what vaekit wrote there moves to the user's folder
            if p.name not in FOLDER_NAMES[folder]:
                os.replace(p, mine / p.name)
        for p in (run / folder).iterdir():
            p.unlink()
        (run / folder).rmdir()
    before = snapshot(mine)
    os.symlink(mine, run / folder)
    r = cli(*writer(name, run, battery_runs["data"], tmp_path))
    assert_contract(r)
    assert_unchanged(before, mine)
    assert (run / folder).is_symlink() and os.readlink(run / folder) == str(mine)
    check_usable(run)


@pytest.mark.parametrize("rel, is_dir, name", list(marked(cases_scratch())))
def test_a_users_entry_named_like_vaekits_scratch_is_never_removed(run_copy, battery_runs,
                                                                   tmp_path, rel, is_dir, name):
    run = run_copy("plain")
    target = run / rel
    target.parent.mkdir(exist_ok=True)
    if is_dir:
        user_folder(target, ["notes.txt", "config.json"])
    else:
        target.write_bytes(b"the user's own file\n")
    before = snapshot(target)
    r = cli(*writer(name, run, battery_runs["data"], tmp_path))
    assert_contract(r)
    assert_unchanged(before, target)
    check_usable(run)
