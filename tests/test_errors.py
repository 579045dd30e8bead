"""A configuration error on the command line: one clear line, a non-zero exit, no traceback.
(The messages themselves are tested in test_config_validation.py.)"""

from __future__ import annotations

import subprocess
import sys


def test_command_line_error_is_one_clear_line_and_exit_code(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "ssl_lightning.train", "data=synthetic", "method.temperature=-1", f"hydra.run.dir={tmp_path}"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode != 0
    assert "Configuration error: method.temperature=-1 is not allowed: a float > 0" in result.stderr
    assert "Traceback" not in result.stderr
