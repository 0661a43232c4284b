import json
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import china
from PIL import Image

import torchloader
from torchloader import PackedDataset
from torchloader.tools.cli import main


def test_env_prints_versions_and_decoder(capsys):
    assert main(["env", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["torchloader"] == torchloader.__version__
    assert info["jpeg_decoder"] in ("libjpeg-turbo (simplejpeg)", "Pillow")
    assert info["cpu_cores"] >= 1


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "usage: torchloader" in capsys.readouterr().err


def test_version(capsys):
    # (``python -m torchloader`` itself: test_python_dash_m_verify_exits_with_1_on_a_damaged_pack)
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"torchloader {torchloader.__version__}"


# --- pack and verify -------------------------------------------------------------------


def image_folder(root, count=4):
    """``root/<cat|dog>/<i>.png``: crops of the sample photo in two sizes."""
    for i in range(count):
        path = root / ("cat", "dog")[i % 2] / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(china()[10 * i : 10 * i + 20, 40 : 64 + 4 * (i % 2)]).save(path)
    return str(root)


def packed(tmp_path, *options):
    src, dst = image_folder(tmp_path / "src"), str(tmp_path / "dst")
    assert main(["pack", src, dst, "--workers", "0", "--quiet", *(options or ("--size", "8", "6"))]) == 0
    return src, dst


def test_pack_writes_a_dataset_and_prints_the_summary(tmp_path, capsys):
    src, dst = image_folder(tmp_path / "src"), str(tmp_path / "dst")

    status = main(["pack", src, dst, "--size", "8", "6", "--shard-bytes", "300B", "--num-workers", "0", "--quiet"])

    out, err = capsys.readouterr()
    assert status == 0 and err == ""
    assert out.startswith("packed 4 samples, ") and out.count("\n") == 1
    ds = PackedDataset(dst)
    assert len(ds) == 4 and ds[0][0].shape == (3, 8, 6) and ds.classes == ["cat", "dog"]
    assert ds.manifest.options["shard_bytes"] == 300 and len(ds.manifest.shards) == 2


def test_pack_size_n_is_a_square_and_crop_is_recorded(tmp_path, capsys):
    packed(tmp_path, "--size", "5", "--crop")
    ds = PackedDataset(tmp_path / "dst")
    assert ds[1][0].shape == (3, 5, 5) and ds.manifest.options["crop"] is True


def test_pack_mode_l_gives_one_channel(tmp_path, capsys):
    packed(tmp_path, "--size", "8", "6", "--mode", "L")
    assert PackedDataset(tmp_path / "dst")[0][0].shape == (1, 8, 6)


def test_pack_size_takes_one_or_two_numbers(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["pack", str(tmp_path), str(tmp_path / "dst"), "--size", "1", "2", "3"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.endswith("error: --size takes H W or one N\n")


def test_pack_shows_progress_unless_quiet(tmp_path, capsys):
    src = image_folder(tmp_path / "src")
    assert main(["pack", src, str(tmp_path / "dst"), "--size", "4", "--workers", "0"]) == 0
    assert "packing" in capsys.readouterr().err


def test_pack_of_a_corrupt_file_fails_with_the_message_and_the_option_to_skip(tmp_path, capsys):
    src = image_folder(tmp_path / "src")
    bad = tmp_path / "src" / "dog" / "bad.png"
    bad.write_text("not an image")
    dst = str(tmp_path / "dst")

    assert main(["pack", src, dst, "--size", "4", "--workers", "0", "--quiet"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"torchloader pack: could not load sample 4 from '{bad}': UnidentifiedImageError: "
        f"cannot identify image file '{bad}'\n(--on-error skip leaves unreadable files out)\n"
    )
    assert not os.path.exists(os.path.join(dst, "manifest.json"))

    assert main(["pack", src, dst, "--size", "4", "--workers", "0", "--quiet", "--on-error", "skip"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("packed 4 samples, ")
    assert f"\nskipped {bad}: could not load sample 4 from '{bad}'" in out


def test_pack_again_is_a_no_op_and_a_different_pack_needs_overwrite(tmp_path, capsys):
    src, dst = packed(tmp_path)
    capsys.readouterr()

    assert main(["pack", src, dst, "--size", "8", "6", "--workers", "0", "--quiet"]) == 0
    assert capsys.readouterr().out == "already packed: 4 samples, 704 B\n"

    assert main(["pack", src, dst, "--size", "7", "--workers", "0", "--quiet"]) == 1
    assert capsys.readouterr().err == (
        f"torchloader pack: '{dst}' holds a different pack (differs in size); pass "
        f"overwrite=True (--overwrite) to replace it, or choose another folder\n"
    )

    assert main(["pack", src, dst, "--size", "7", "--workers", "0", "--quiet", "--overwrite"]) == 0
    assert PackedDataset(dst)[0][0].shape == (3, 7, 7)


def test_pack_of_a_missing_source_fails_with_the_message(tmp_path, capsys):
    src = str(tmp_path / "missing")
    assert main(["pack", src, str(tmp_path / "dst"), "--workers", "0"]) == 1
    assert capsys.readouterr().err == f"torchloader pack: '{src}' is neither a folder nor a .csv file\n"


def test_pack_refuses_a_negative_worker_count(tmp_path, capsys):
    src = image_folder(tmp_path / "src")
    assert main(["pack", src, str(tmp_path / "dst"), "--workers", "-1"]) == 1
    assert capsys.readouterr().err == "torchloader pack: num_workers must be >= 0 (got num_workers=-1)\n"


def test_verify_of_an_intact_pack_succeeds(tmp_path, capsys):
    _, dst = packed(tmp_path)
    capsys.readouterr()

    assert main(["verify", dst]) == 0
    assert capsys.readouterr().out == f"{dst}: every file matches the manifest\n"


def flip_last_byte(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage, problem",
    [
        (flip_last_byte, "'{path}' has a different checksum than the manifest: its bytes changed"),
        (lambda p: p.write_bytes(p.read_bytes()[:-10]), "'{path}' cannot be read: ValueError: "),
        (os.remove, "'{path}' is missing"),
    ],
)
@pytest.mark.parametrize("name", ["shard-00000.npy", "labels.npy"])
def test_verify_names_the_file_that_differs_and_fails(tmp_path, capsys, damage, problem, name):
    _, dst = packed(tmp_path)
    path = tmp_path / "dst" / name
    damage(path)
    capsys.readouterr()

    assert main(["verify", dst]) == 1
    out = capsys.readouterr().out
    assert out.startswith(problem.format(path=path)) and out.count("\n") == 1


def test_verify_of_a_folder_that_is_no_pack_fails_with_the_fix(tmp_path, capsys):
    assert main(["verify", str(tmp_path)]) == 1
    assert capsys.readouterr().err == (
        f"torchloader verify: '{tmp_path}' has no manifest.json: it is not a packed data set, "
        f"or its pack was interrupted; run `torchloader pack SRC '{tmp_path}'` (again) to complete it\n"
    )


def test_python_dash_m_verify_exits_with_1_on_a_damaged_pack(tmp_path):
    _, dst = packed(tmp_path)
    np.save(tmp_path / "dst" / "labels.npy", np.zeros(4, np.int64))

    out = subprocess.run([sys.executable, "-m", "torchloader", "verify", dst], capture_output=True, text=True)

    assert out.returncode == 1
    assert out.stdout == (
        f"'{tmp_path / 'dst' / 'labels.npy'}' has a different checksum than the manifest: its bytes changed\n"
    )


# --- paths that are not valid UTF-8 --------------------------------------------------


def folder_with_an_undecodable_bad_file(tmp_path):
    """``src/<cat|dog>/<i>.png`` plus ``src/dog/bad\\xff.jpg`` (garbage): a name no UTF-8 stream can print."""
    src = image_folder(tmp_path / "src")
    bad = os.path.join(os.fsencode(src), b"dog", b"bad\xff.jpg")
    with open(bad, "wb") as f:
        f.write(b"\x00garbage, not a JPEG\xff" * 4)
    return src, os.fsdecode(bad)


@pytest.mark.parametrize("encoding", ["PYTHONIOENCODING=utf-8", "LANG=C.UTF-8"])
def test_pack_skipping_a_file_whose_name_is_not_utf8_completes_and_names_it(tmp_path, encoding):
    src, bad = folder_with_an_undecodable_bad_file(tmp_path)
    dst = str(tmp_path / "dst")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONIOENCODING", "LANG", "LC_ALL", "LC_CTYPE")}
    env.update([encoding.split("=")])

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torchloader",
            "pack",
            src,
            dst,
            "--size",
            "4",
            "--workers",
            "0",
            "--quiet",
            "--on-error",
            "skip",
        ],
        capture_output=True,
        env=env,
    )

    assert done.returncode == 0, done.stderr
    assert done.stderr == b""
    assert done.stdout.startswith(b"packed 4 samples, ")
    named = os.fsencode(os.path.dirname(bad)) + b"/bad"
    # the raw name where the stream passes it on (surrogateescape), else escaped
    assert any(b"\nskipped " + named + name in done.stdout for name in (b"\xff.jpg: ", b"\\udcff.jpg: "))
    assert len(PackedDataset(dst)) == 4


def test_verify_inspect_and_errors_print_an_undecodable_path_escaped(tmp_path, capsys):
    # capsys's stream encodes strictly, as PYTHONIOENCODING=utf-8 does
    src, bad = folder_with_an_undecodable_bad_file(tmp_path)
    dst = os.fsdecode(os.path.join(os.fsencode(str(tmp_path)), b"packed\xff"))
    shown = repr(dst)[1:-1]  # '\udcff' backslash-escaped

    assert main(["pack", src, dst, "--size", "4", "--workers", "0", "--quiet", "--on-error", "skip"]) == 0
    assert "bad\\udcff.jpg" in capsys.readouterr().out
    assert main(["verify", dst]) == 0
    assert capsys.readouterr().out == f"{shown}: every file matches the manifest\n"
    assert main(["inspect", src]) == 0
    assert "\n    " + repr(bad)[1:-1] + ": UnidentifiedImageError" in capsys.readouterr().out
    assert main(["inspect", src, "--on-error", "raise"]) == 1
    assert "bad\\udcff.jpg" in capsys.readouterr().err
    assert main(["pack", src, dst + "2", "--size", "4", "--workers", "0", "--quiet"]) == 1
    assert "bad\\udcff.jpg" in capsys.readouterr().err
