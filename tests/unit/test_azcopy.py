"""AzCopy's output parser, and `AzCopy.copy` driving a stand-in for the real binary."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import pytest
import trio
from trio.testing import MockClock

from blobmount import tools
from blobmount.azcopy import AzCopy, JobSummary, one_line, parse_job_log, parse_output
from blobmount.errors import ToolNotFound, TransferError
from blobmount.threads import Threads


def message(kind: str, content: object) -> str:
    """One line of `azcopy --output-type json`: content is JSON text inside the JSON."""
    if not isinstance(content, str):
        content = json.dumps(content)
    return json.dumps(
        {
            "TimeStamp": "2026-11-21T23:47:50.187291094Z",
            "MessageType": kind,
            "MessageContent": content,
            "PromptDetails": {"PromptType": "", "ResponseOptions": None, "PromptTarget": ""},
        }
    )


def end_of_job(status: str, completed: int, failed: int, nbytes: int, **extra) -> str:
    # AzCopy writes its counters as strings.
    content = {
        "ErrorMsg": "",
        "JobID": "224cb63e-9e47-1043-6d73-7341fee02195",
        "JobStatus": status,
        "TotalTransfers": str(completed + failed),
        "TransfersCompleted": str(completed),
        "TransfersFailed": str(failed),
        "TransfersSkipped": "0",
        "TotalBytesTransferred": str(nbytes),
        "PercentComplete": "100",
        "FailedTransfers": [],
        "SkippedTransfers": [],
        **extra,
    }
    return message("EndOfJob", content)


INFO = message("Info", "INFO: Scanning...")
INIT = message("Init", {"LogFileLocation": "/x/job.log", "JobID": "224cb63e"})


def test_completed_job():
    progress = message("Progress", {"JobStatus": "InProgress", "TransfersCompleted": "0"})
    text = "\n".join([INFO, INIT, progress, end_of_job("Completed", 1, 0, 11)]) + "\n"
    summary, errors = parse_output(text)
    assert summary == JobSummary("Completed", 1, 0, 11, transfers_total=1)
    assert summary.ok
    assert errors == []


def test_failed_transfers():
    text = "\n".join([INFO, end_of_job("CompletedWithErrors", 2, 1, 2000)])
    summary, errors = parse_output(text)
    assert summary == JobSummary("CompletedWithErrors", 2, 1, 2000, transfers_total=3)
    assert not summary.ok
    assert errors == []


def test_failed_transfers_listed_in_the_summary():
    text = end_of_job(
        "Failed",
        0,
        1,
        0,
        FailedTransfers=[{"Src": "http://h/a/b.bin?sv=1&sig=SECRET", "ErrorCode": 404}],
    )
    summary, errors = parse_output(text)
    assert summary is not None and summary.status == "Failed"
    assert errors == ["http://h/a/b.bin: failed (404)"]


def test_error_message_is_one_line_and_redacted():
    error = message(
        "Error",
        "Cannot perform copy due to error: cannot list files due to reason HEAD "
        "http://127.0.0.1:10000/devstoreaccount1/c/b?se=2026&sig=SECRET%2Bsig%3D\n"
        "-----------------------------------------\n"
        "RESPONSE 403: 403 Server failed to authenticate the request.\n"
        "ERROR CODE: AuthorizationFailure\n"
        "-----------------------------------------\n"
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        "<Error><Code>AuthorizationFailure</Code><Message>Server failed\n"
        "RequestId:f5ef4a35</Message></Error>\n"
        "-----------------------------------------\n",
    )
    summary, errors = parse_output(INFO + "\n" + error + "\n")
    assert summary is None
    assert len(errors) == 1
    [line] = errors
    assert "\n" not in line
    assert "SECRET" not in line
    assert "sig=REDACTED" in line
    assert "RESPONSE 403" in line and "ERROR CODE: AuthorizationFailure" in line
    assert "----" not in line and "<" not in line and "RequestId" not in line


def test_failure_notes_are_errors():
    note = message(
        "Info",
        "INFO: Authentication failed, it is either not correct, or expired, or does not have"
        " the correct permission PUT http://h/c/up.bin?sig=SECRET\n"
        "-------------------------\n"
        "RESPONSE 403: 403 This request is not authorized to perform this operation.\n"
        "ERROR CODE: AuthorizationPermissionMismatch\n",
    )
    summary, errors = parse_output("\n".join([INFO, note, end_of_job("Cancelled", 0, 0, 0)]))
    assert summary is not None and summary.status == "Cancelled" and not summary.ok
    [line] = errors
    assert line.startswith("Authentication failed")
    assert "AuthorizationPermissionMismatch" in line and "SECRET" not in line


def test_plain_text_lines_are_errors():
    summary, errors = parse_output("unknown flag: --bogus\n\n")
    assert summary is None
    assert errors == ["unknown flag: --bogus"]


def test_unreadable_summary():
    summary, errors = parse_output(message("EndOfJob", "{not json"))
    assert summary is None
    assert errors and errors[0].startswith("unreadable job summary")


def test_job_log_reasons():
    log = (
        "2026/11/21 23:48:08 INFO: [P#0-T#1] DOWNLOADSUCCESSFUL: /tmp/x/f0.bin\n"
        "2026/11/21 23:48:08 ERR: [P#0-T#0] DOWNLOADFAILED: "
        "http://127.0.0.1:1/devstoreaccount1/c/f1.bin?sig=SECRET : 404 : "
        "The specified blob does not exist.. When Starting download. X-Ms-Request-Id: abc\n"
        "   RESPONSE Status: 404 The specified blob does not exist.\n"
    )
    assert parse_job_log(log) == [
        "DOWNLOADFAILED: http://127.0.0.1:1/devstoreaccount1/c/f1.bin?sig=REDACTED : 404 : "
        "The specified blob does not exist.. When Starting download."
    ]


def test_one_line():
    assert one_line("a\n---\n\n  b  \n") == "a; b"
    assert one_line("a\n---\nResponse contained no body\n---\n") == "a"


# --- AzCopy.copy against a stand-in binary ---------------------------------------------------

FAKE_AZCOPY = """#!/bin/sh
# Records its arguments and environment, then prints what $FAKE_OUTPUT holds.
printf '%s\\n' "$@" > "$FAKE_RECORD.args"
env > "$FAKE_RECORD.env"
mkdir -p "$AZCOPY_LOG_LOCATION" "$AZCOPY_JOB_PLAN_LOCATION"
if [ -n "$FAKE_LOG" ]; then printf '%s\\n' "$FAKE_LOG" > "$AZCOPY_LOG_LOCATION/job.log"; fi
cat "$FAKE_OUTPUT"
if [ -n "$FAKE_SLEEP" ]; then exec sleep "$FAKE_SLEEP"; fi
exit "${FAKE_EXIT:-0}"
"""


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    binary = tmp_path / "azcopy"
    binary.write_text(FAKE_AZCOPY)
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    output = tmp_path / "output.jsonl"
    monkeypatch.setenv("FAKE_OUTPUT", str(output))
    monkeypatch.setenv("FAKE_RECORD", str(tmp_path / "record"))

    def run(lines: list[str], exit_code: int = 0, log: str = "", sleep: str = "",
            stall_timeout: float | None = None, clock: trio.abc.Clock | None = None,
            **kwargs):
        output.write_text("\n".join(lines) + "\n")
        monkeypatch.setenv("FAKE_EXIT", str(exit_code))
        monkeypatch.setenv("FAKE_LOG", log)
        monkeypatch.setenv("FAKE_SLEEP", sleep)
        azcopy = AzCopy(binary, tmp_path / "work", threads=Threads(2), concurrency=4,
                        block_size_mb=0.5, stall_timeout=stall_timeout)
        return trio.run(lambda: azcopy.copy("http://h/c/b?sig=SECRET", "/dst", **kwargs),
                        clock=clock)

    def recorded(kind: str) -> str:
        return (tmp_path / f"record.{kind}").read_text()

    run.recorded = recorded
    run.work = tmp_path / "work"
    return run


def test_copy_command_and_environment(fake, caplog):
    caplog.set_level(logging.DEBUG, logger="blobmount.azcopy")
    summary = fake([INFO, end_of_job("Completed", 1, 0, 5)], from_to="BlobLocal")
    assert summary == JobSummary("Completed", 1, 0, 5, transfers_total=1)
    args = fake.recorded("args").splitlines()
    assert args[:6] == [
        "copy",
        "http://h/c/b?sig=SECRET",
        "/dst",
        "--from-to",
        "BlobLocal",
        "--output-type",
    ]
    assert "--skip-version-check" in args
    assert args[args.index("--block-size-mb") + 1] == "0.5"
    env = dict(line.split("=", 1) for line in fake.recorded("env").splitlines() if "=" in line)
    job_dir = Path(env["HOME"])
    assert job_dir.parent == fake.work
    assert env["AZCOPY_LOG_LOCATION"].startswith(str(job_dir))
    assert env["AZCOPY_JOB_PLAN_LOCATION"].startswith(str(job_dir))
    assert env["AZCOPY_CONCURRENCY_VALUE"] == "4"
    assert env["AZCOPY_DISABLE_SYSLOG"] == "true"
    assert not job_dir.exists()
    assert list(fake.work.iterdir()) == []
    assert stat.S_IMODE(os.stat(fake.work).st_mode) == 0o700
    # The command line is logged, with the SAS signature masked.
    assert "copy 'http://h/c/b?sig=REDACTED' /dst --from-to BlobLocal" in caplog.text
    assert "SECRET" not in caplog.text


def test_copy_failed_transfers_quote_the_job_log(fake):
    with pytest.raises(TransferError) as caught:
        fake(
            [end_of_job("CompletedWithErrors", 0, 1, 0)],
            exit_code=1,
            log="2026/11/21 23:48:08 ERR: [P#0-T#0] UPLOADFAILED: /src/f : 000 : disk on fire.",
            from_to="LocalBlob",
        )
    text = str(caught.value)
    assert "\n" not in text and "SECRET" not in text
    assert "1 of 1 transfers failed (CompletedWithErrors)" in text
    assert "UPLOADFAILED: /src/f : 000 : disk on fire." in text
    assert list(fake.work.iterdir()) == []


def test_copy_error_without_summary(fake):
    error = message("Error", "Cannot perform copy due to error: The specified file was not found.")
    with pytest.raises(TransferError) as caught:
        fake([INFO, error], exit_code=1, from_to="BlobLocal")
    assert str(caught.value) == (
        "AzCopy BlobLocal http://h/c/b -> /dst: failed: Cannot perform copy due to error:"
        " The specified file was not found."
    )


def test_copy_listed_files_missing_at_source(fake, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("a.bin\nb.bin\n\nc.bin\n")
    with pytest.raises(TransferError, match="only 2 of the 3 files listed"):
        fake([end_of_job("Completed", 2, 0, 2)], from_to="BlobLocal", list_of_files=listing)
    assert fake.recorded("args").splitlines().count("--list-of-files") == 1


def test_copy_completed_but_exit_status_nonzero(fake):
    with pytest.raises(TransferError, match="ended Completed, but AzCopy exited 3"):
        fake([end_of_job("Completed", 1, 0, 1)], exit_code=3, from_to="BlobLocal")


def test_copy_cannot_run(tmp_path):
    azcopy = AzCopy(tmp_path / "missing-azcopy", tmp_path / "work", threads=Threads(1))
    with pytest.raises(TransferError, match="cannot run"):
        trio.run(lambda: azcopy.copy("a", "b", from_to="LocalBlob"))
    assert list((tmp_path / "work").iterdir()) == []


# --- tools -----------------------------------------------------------------------------------


def test_find_azcopy_from_environment(tmp_path, monkeypatch):
    binary = tmp_path / "my-azcopy"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    monkeypatch.setenv("BLOBMOUNT_AZCOPY", str(binary))
    assert tools.find_azcopy() == binary
    binary.chmod(0o644)
    with pytest.raises(ToolNotFound, match="BLOBMOUNT_AZCOPY"):
        tools.find_azcopy()


def test_find_tools_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.delenv("BLOBMOUNT_AZURITE", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(tools, "PROJECT_TOOLS", tmp_path / "tools")
    monkeypatch.setattr(tools, "VENV_TOOLS", None)
    with pytest.raises(ToolNotFound, match="scripts/install"):
        tools.find_azurite()


def test_find_tools_next_to_the_virtualenv_first(tmp_path, monkeypatch):
    """The system-wide venv's blobmount finds /opt/blobmount/tools, not a checkout's."""
    monkeypatch.delenv("BLOBMOUNT_AZCOPY", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    for folder in ("venv-tools", "project-tools"):
        binary = tmp_path / folder / tools._AZCOPY_IN_TOOLS
        binary.parent.mkdir(parents=True)
        binary.write_text("#!/bin/sh\n")
        binary.chmod(0o755)
    monkeypatch.setattr(tools, "VENV_TOOLS", tmp_path / "venv-tools")
    monkeypatch.setattr(tools, "PROJECT_TOOLS", tmp_path / "project-tools")
    assert tools.find_azcopy() == tmp_path / "venv-tools" / tools._AZCOPY_IN_TOOLS
    monkeypatch.setattr(tools, "VENV_TOOLS", tmp_path / "elsewhere")
    assert tools.find_azcopy() == tmp_path / "project-tools" / tools._AZCOPY_IN_TOOLS


def test_a_job_whose_counters_stand_still_is_stopped(fake):
    progress = message("Progress", {"JobStatus": "InProgress", "TransfersCompleted": "0",
                                    "TotalBytesTransferred": "0"})
    # Time is the subject: the clock jumps ahead whenever the job has been idle for a
    # moment, so the stall is found in virtual seconds, whatever the machine's load.
    clock = MockClock(autojump_threshold=0.1)
    with pytest.raises(TransferError, match="no progress for 0.5 s; stopped"):
        fake([INFO, progress], sleep="30", stall_timeout=0.5, from_to="BlobLocal",
             clock=clock)
    assert clock.current_time() < 30  # stopped, not waited for: the stand-in sleeps 30 s
    assert list(fake.work.iterdir()) == []


def test_a_job_that_ends_is_not_stopped(fake):
    summary = fake([INFO, end_of_job("Completed", 1, 0, 5)], stall_timeout=0.5,
                   from_to="BlobLocal")
    assert summary.ok
