"""A run directory nobody can corrupt: one writer, rows once, edited prompts, file names, bad --out, leftovers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

import fake_adapter
from entroprobe.cli import main
from entroprobe.errors import InputError, LoadError, UnknownNameError
from entroprobe.probe import ProbeConfig, RunSummary, collect, run_probe
from entroprobe.probe import store
from entroprobe.probe.lock import LOCK_NAME, RunLock
from entroprobe.probe.schema import ROW_KEY

HERE = Path(__file__).parent


@pytest.fixture(autouse=True)
def _fake_family():
    fake_adapter.register()


def config(out, **changes) -> ProbeConfig:
    settings = dict(model="fake", out=out, text_prompts="samples", image_prompts="samples",
                    tasks=("encode", "text-gen", "image-gen"), limit=4, progress=False)  # fmt: skip
    settings.update(changes)
    return ProbeConfig(**settings)


def jsonl(path: Path, records: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return f"jsonl:{path}"


def _committed(run_dir: Path) -> int:
    path = run_dir / "shards" / "rank-0.sqlite"
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            return db.execute("SELECT COUNT(*) FROM units").fetchone()[0]
    except sqlite3.Error:
        return 0


def _slow_run(out: Path) -> subprocess.Popen:
    command = [sys.executable, str(HERE / "run_fake.py"), "run", "--model", "fake", "--text-prompts", "samples",
               "--image-prompts", "samples", "--tasks", "encode,text-gen", "--limit", "6", "--out", str(out)]
    process = subprocess.Popen(command, env={**os.environ, "FAKE_SLEEP": "0.1"}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 60
    while _committed(out) < 2 and time.time() < deadline:
        time.sleep(0.02)
    return process


def test_a_second_writer_is_refused_naming_the_first_and_no_row_is_committed_twice(tmp_path):
    out = tmp_path / "run"
    first = _slow_run(out)
    try:
        with pytest.raises(LoadError, match=rf"is being written by another entroprobe process \(pid {first.pid} on "):
            run_probe(config(out, limit=6, tasks=("encode", "text-gen")))
        assert first.wait(timeout=120) == 0
    finally:
        first.kill()
    frame = pd.read_parquet(out / "results.parquet")
    assert not frame.duplicated(ROW_KEY).any() and frame["prompt_id"].nunique() == 12


def test_the_lock_of_a_killed_run_does_not_block_and_the_resume_equals_a_clean_run(tmp_path):
    out = tmp_path / "run"
    process = _slow_run(out)
    process.send_signal(signal.SIGKILL)
    process.wait()
    holder = json.loads((out / LOCK_NAME).read_text())
    assert holder["pid"] == process.pid  # its name is still in the file; the lock itself died with it
    resumed = run_probe(config(out, limit=6, tasks=("encode", "text-gen")))
    assert resumed.done_before >= 2
    clean = run_probe(config(tmp_path / "clean", limit=6, tasks=("encode", "text-gen")))
    assert clean.units == resumed.units
    pd.testing.assert_frame_equal(pd.read_parquet(out / "results.parquet"),
                                  pd.read_parquet(tmp_path / "clean" / "results.parquet"))  # fmt: skip


def test_the_lock_refuses_within_one_process_too_and_is_released(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(LoadError, match=f"pid {os.getpid()}"):
            RunLock(tmp_path).acquire()
    with RunLock(tmp_path):  # released: taken again
        pass


def test_a_row_cannot_be_committed_twice_and_duplicates_of_an_older_version_are_repaired(tmp_path):
    out = tmp_path / "run"
    run_probe(config(out))
    clean = pd.read_parquet(out / "results.parquet")
    shard = out / "shards" / "rank-0.sqlite"
    with sqlite3.connect(shard) as db:
        with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
            db.execute("INSERT INTO rows SELECT * FROM rows LIMIT 1")
        db.execute("DROP INDEX rows_key")  # as an older entroprobe left it, with every row twice
        db.execute("INSERT INTO rows SELECT * FROM rows")
    shutil.copy(shard, out / "shards" / "rank-1.sqlite")  # and a second shard holding the same units
    frame = collect(out)
    assert frame.attrs["dropped_duplicates"] == 2 * len(clean)
    pd.testing.assert_frame_equal(frame, clean)
    repaired = collect(out, repair=True)  # for good: in the shards
    assert repaired.attrs["dropped_duplicates"] == 0
    pd.testing.assert_frame_equal(repaired, clean)
    with sqlite3.connect(out / "shards" / "rank-1.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM rows").fetchone()[0] == 0  # its units are rank 0's
    with sqlite3.connect(shard) as db:
        db.execute("DROP INDEX rows_key")
        db.execute("INSERT INTO rows SELECT * FROM rows")
    (out / "manifest.json").write_text((out / "manifest.json").read_text().replace('"complete"', '"running"'))
    again = run_probe(config(out))  # opening the shard repairs it for good
    assert again.succeeded == 0 and any("kept once" in n for n in again.notices)
    with sqlite3.connect(shard) as db:
        assert db.execute("SELECT COUNT(*) FROM rows").fetchone()[0] == len(clean)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "results.parquet"), clean)


def test_a_unit_is_committed_all_or_none_and_a_retried_unit_keeps_only_its_new_rows(tmp_path):
    out = tmp_path / "run"
    run_probe(config(out))
    shard_path = out / "shards" / "rank-0.sqlite"
    with sqlite3.connect(shard_path) as db:
        db.row_factory = sqlite3.Row
        unit = db.execute("SELECT unit FROM units WHERE status = 'ok' LIMIT 1").fetchone()["unit"]
        mine = [dict(r) for r in db.execute("SELECT * FROM rows WHERE unit = ?", (unit,))]
    rows = [{k: v for k, v in r.items() if k != "unit"} for r in mine]
    shard = store.ShardStore(out, 0)
    try:
        # a retried unit: its old rows go, its new ones stay, in one transaction
        shard.commit_unit(unit, 0, [{**r, "value": r["value"] + 1.0} for r in rows], None, "c")
        with pytest.raises(sqlite3.IntegrityError):  # the same row twice: the whole unit is refused
            shard.commit_unit("other/unit/encode", 1, [rows[0], rows[0]], None, "c")
    finally:
        shard.close()
    with sqlite3.connect(shard_path) as db:
        values = [v for (v,) in db.execute("SELECT value FROM rows WHERE unit = ?", (unit,))]
        assert sorted(values) == pytest.approx(sorted(r["value"] + 1.0 for r in rows))
        assert db.execute("SELECT COUNT(*) FROM rows WHERE unit = 'other/unit/encode'").fetchone()[0] == 0
        assert db.execute("SELECT COUNT(*) FROM units WHERE unit = 'other/unit/encode'").fetchone()[0] == 0
    assert "other/unit/encode" not in store.done_units(out)


def test_an_edited_prompt_is_measured_again_and_said_so(tmp_path):
    records = [{"id": "a", "text": "a red ball on the grass"}, {"id": "b", "text": "two blue cups"}]
    source = jsonl(tmp_path / "p.jsonl", records)
    out = tmp_path / "run"
    run_probe(config(out, text_prompts=source, image_prompts=None, tasks=("encode",)))
    before = pd.read_parquet(out / "results.parquet")
    records[1]["text"] = "two blue cups and a green plate on a table"
    jsonl(tmp_path / "p.jsonl", records)
    summary = run_probe(config(out, text_prompts=source, image_prompts=None, tasks=("encode",)))
    assert summary.succeeded == 1 and summary.done_before == 1
    assert any("1 units' prompts changed since they were measured (e.g. jsonl/b/encode)" in n for n in summary.notices)
    after = pd.read_parquet(out / "results.parquet")
    pd.testing.assert_frame_equal(after[after.prompt_id == "a"], before[before.prompt_id == "a"])
    assert set(after.loc[after.prompt_id == "b", "n_tokens"]) == {10}  # the new text's words, not the old 3
    assert not after.duplicated(ROW_KEY).any()


def test_ids_that_once_collided_get_their_own_image_files(tmp_path):
    source = jsonl(tmp_path / "p.jsonl", [{"id": "p/q", "text": "a red ball"}, {"id": "p__q", "text": "a blue cup"}])
    out = tmp_path / "run"
    run_probe(config(out, text_prompts=source, image_prompts=None, tasks=("image-gen",)))
    responses = [json.loads(line) for line in (out / "responses.jsonl").read_text().splitlines()]
    images = [r["image"] for r in responses]
    assert len(set(images)) == 2 and all((out / i).is_file() for i in images)
    assert store.file_stem("jsonl/p/q/image-gen") != store.file_stem("jsonl/p__q/image-gen")
    long = store.file_stem("x" * 500)
    assert len(long) == 120 and long != store.file_stem("x" * 499 + "y")
    assert store.file_stem("s/P1/encode").lower() != store.file_stem("s/p1/encode").lower()  # macOS, Windows


def test_an_out_that_is_a_file_is_one_error_line_before_anything_loads(tmp_path, capsys):
    target = tmp_path / "results.txt"
    target.write_text("not a directory")
    assert main(["run", "--model", "minilm", "--text-prompts", "samples", "--out", str(target)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"entroprobe: error: --out {target} is a file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_out_is_refused_before_the_model_loads(tmp_path):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        with pytest.raises(LoadError, match="cannot write the run directory"):
            run_probe(config(parent / "run", model="minilm", image_prompts=None, tasks=("encode",)))
    finally:
        parent.chmod(0o755)


def test_a_full_disk_is_one_error_naming_it_and_committed_units_stay(tmp_path, monkeypatch):
    out = tmp_path / "run"
    calls = {"n": 0}
    real = store.ShardStore.commit_unit

    def filling(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 1:  # the first unit fits, the disk is full at the second
            raise store.commit_failure(sqlite3.OperationalError("database or disk is full"), self.path)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(store.ShardStore, "commit_unit", filling)
    with pytest.raises(LoadError, match=r"the disk is full\. The units committed before are kept"):
        run_probe(config(out, limit=4, tasks=("encode",)))
    monkeypatch.undo()
    assert _committed(out) == 1
    summary = run_probe(config(out, limit=4, tasks=("encode",)))
    assert summary.done_before == 1 and summary.succeeded == 7  # the unit that fitted is kept; 7 to go


def test_a_tiny_file_system_that_fills_up(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        with pytest.raises(LoadError, match=r"(disk is full|No space left)"):
            run_probe(config(mount / "run", limit=6, save_states=True))
        assert (mount / "run" / "shards" / "rank-0.sqlite").exists()  # what was committed stays
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def test_a_run_that_fails_before_its_first_unit_leaves_no_out_behind(tmp_path):
    with pytest.raises(UnknownNameError):  # refused before the directory is made
        run_probe(config(tmp_path / "new", model="nosuch:model"))
    assert not (tmp_path / "new").exists()
    with pytest.raises(InputError, match="Unknown model argument"):  # made, locked, then the model fails to load
        run_probe(config(tmp_path / "new", model="minilm", model_args={"bogus": 1}, image_prompts=None,
                         tasks=("encode",)))  # fmt: skip
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()  # a directory the user made stays, empty or not
    with pytest.raises(InputError):
        run_probe(config(tmp_path / "kept", model="minilm", model_args={"bogus": 1}, image_prompts=None,
                         tasks=("encode",)))  # fmt: skip
    assert (tmp_path / "kept").is_dir()


def test_stale_temporary_files_of_killed_processes_are_removed(tmp_path):
    out = tmp_path / "run"
    run_probe(config(out, limit=1, tasks=("encode",)))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = out / f".results.parquet.{dead.pid}.tmp"
    mine = out / f".manifest.json.{os.getpid()}.tmp"
    stale.write_text("half a file")
    mine.write_text("being written")
    collect(out)  # reading, perhaps beside a live run on another host: it removes nothing
    assert stale.exists()
    collect(out, repair=True)  # under the run's lock: no live writer has temporaries here
    assert not stale.exists() and mine.exists()
    mine.unlink()


def test_the_manifest_records_threads_and_every_invocation_and_a_resume_says_what_differs(tmp_path, monkeypatch):
    out = tmp_path / "run"
    threads = torch.get_num_threads()
    run_probe(config(out, limit=2))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["threads"] == threads and manifest["world_size"] == 1 and len(manifest["invocations"]) == 1
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads + 3)
    (out / "manifest.json").write_text(json.dumps({**manifest, "status": "running"}))
    summary = run_probe(config(out, limit=2))
    assert any(f"threads {threads + 3}, the run began with {threads}" in n for n in summary.notices)
    assert len(json.loads((out / "manifest.json").read_text())["invocations"]) == 2


def test_a_summary_of_another_rank_counts_that_rank_s_rows():
    assert "rows committed by rank 1: 700" in RunSummary(run_dir=Path("r"), rows=700, rank=1).describe()
    assert "rows in results.parquet: 700" in RunSummary(run_dir=Path("r"), rows=700).describe()


def test_prompts_piped_into_head_end_quietly(tmp_path):
    result = subprocess.run(f"{sys.executable} -m entroprobe prompts samples | head -1", shell=True,
                            capture_output=True, text=True)  # fmt: skip
    assert result.stdout.count("\n") == 1 and "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr


def test_the_prompts_are_stored_beside_the_results_and_join_to_them(tmp_path):
    out = tmp_path / "run"
    run_probe(config(out))
    prompts = pd.read_parquet(out / "prompts.parquet")
    results = pd.read_parquet(out / "results.parquet")
    joined = results.merge(prompts, on=["source", "prompt_id"], how="left", validate="many_to_one")
    assert joined["content"].notna().all() and len(joined) == len(results)
    text = prompts[prompts["modality"] == "text"]
    assert text["text"].str.len().gt(0).all()
    meta = json.loads(text["prompt_meta"].iloc[0])
    assert isinstance(meta["n_words"], int)  # types kept


def test_a_full_disk_while_saving_an_image_stops_the_run_instead_of_failing_every_unit(tmp_path, monkeypatch):
    import errno

    from PIL import Image

    save = Image.Image.save

    def full(self, target, *args, **kwargs):
        if isinstance(target, (str, Path)):  # files on the disk, not the samples' in-memory PNGs
            raise OSError(errno.ENOSPC, "No space left on device")
        return save(self, target, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", full)
    with pytest.raises(LoadError, match="the disk is full"):
        run_probe(config(tmp_path / "run", image_prompts=None, tasks=("image-gen",)))
    assert not (tmp_path / "run" / "errors.jsonl").exists()  # no unit was blamed for it


def test_collect_repair_is_refused_while_a_run_writes(tmp_path):
    out = tmp_path / "run"
    run_probe(config(out, limit=1, tasks=("encode",)))
    with RunLock(out):
        with pytest.raises(LoadError, match="is being written by another entroprobe process"):
            collect(out, repair=True)
        assert len(collect(out)) > 0  # reading a running run is allowed
