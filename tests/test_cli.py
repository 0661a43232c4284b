import json
import subprocess
import sys

import torchloader
from torchloader.cli import main


def test_env_prints_versions_and_decoder(capsys):
    assert main(["env", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["torchloader"] == torchloader.__version__
    assert info["jpeg_decoder"] in ("libjpeg-turbo (simplejpeg)", "Pillow")
    assert info["cpu_cores"] >= 1


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "usage: torchloader" in capsys.readouterr().err


def test_python_dash_m_and_version():
    out = subprocess.run(
        [sys.executable, "-m", "torchloader", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"torchloader {torchloader.__version__}"
