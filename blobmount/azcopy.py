"""AzCopy jobs: run `azcopy copy` as a subprocess under trio and report how it went.

Each job gets a fresh private folder under `work_dir` for AzCopy's log, job plan and
bookkeeping (its `$HOME` points there too, so nothing lands in `~/.azcopy`); the folder is
removed when the job ends, however it ends. A job succeeds when AzCopy reports
`JobStatus: Completed` with no failed transfer; anything else raises `TransferError` with one
line naming what failed and AzCopy's reason, SAS signatures masked.

AzCopy's `--output-type json` prints one JSON object a line::

    {"MessageType": "EndOfJob", "MessageContent": "{\\"JobStatus\\": \\"Completed\\", ...}"}

`MessageType` is `Info`, `Init`, `Progress`, `EndOfJob` or `Error`; for `Progress` and
`EndOfJob`, `MessageContent` is itself JSON with the job's counters (as strings).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shlex
import shutil
import signal
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import trio

from blobmount.children import Child
from blobmount.errors import TransferError
from blobmount.log import redact
from blobmount.metrics import Metrics
from blobmount.threads import Threads

logger = logging.getLogger(__name__)

#: How much of AzCopy's log a failed job's reasons are looked for in.
_MAX_LOG_BYTES = 8 * 1024 * 1024
#: Seconds a cancelled AzCopy gets to exit after SIGTERM before SIGKILL: under the
#: suite's load on 2 cores it took more than 3 s (test_cancelling_a_job_stops_azcopy).
_TERM_GRACE = 10.0
#: How many reasons a TransferError's message quotes.
_MAX_REASONS = 2
# A failed transfer in AzCopy's job log: `... ERR: [P#0-T#3] DOWNLOADFAILED: URL : 404 : why`.
_FAILED_TRANSFER = re.compile(r"\bERR: \[P#\d+-T#\d+\] (\w*FAILED: .*)$")
# An Info message that is really about a failure (an HTTP error response, a refused SAS).
_FAILURE_NOTE = re.compile(r"RESPONSE \d{3}\b|Authentication failed")
# A line of dashes (or equals signs) that AzCopy draws around an HTTP response.
_RULE = re.compile(r"^\s*(?:-{3,}|={3,})\s*$", re.MULTILINE)
# AzCopy ends a failed transfer's line with the request id, noise in a one-line message.
_REQUEST_ID = re.compile(r"\s*X-Ms-Request-Id:.*$")


@dataclass(frozen=True)
class JobSummary:
    """What AzCopy reported at the end of a job."""

    status: str  # AzCopy's JobStatus: "Completed", "CompletedWithErrors", "Failed", ...
    transfers_completed: int
    transfers_failed: int
    bytes_transferred: int
    transfers_total: int = 0  # every transfer the job found, skipped ones included

    @property
    def ok(self) -> bool:
        return self.status == "Completed" and self.transfers_failed == 0


def one_line(text: str) -> str:
    """AzCopy's multi-line error text as one line.

    AzCopy frames an HTTP failure between rules of dashes: what it was doing, then the
    status and error code, then the response body (XML). The lines are joined with '; ',
    without the rules and without the body, which repeats the error code at length.
    """
    parts = []
    for section in _RULE.split(text):
        lines = [line.strip() for line in section.splitlines() if line.strip()]
        if not lines or lines[0].startswith("<") or lines[0] == "Response contained no body":
            continue
        parts.extend(lines)
    return "; ".join(parts)


def _count(content: dict, key: str) -> int:
    try:
        return int(float(content.get(key) or 0))
    except (TypeError, ValueError):
        return 0


def _summary(content: dict) -> JobSummary:
    return JobSummary(
        status=str(content.get("JobStatus") or "Unknown"),
        transfers_completed=_count(content, "TransfersCompleted"),
        transfers_failed=_count(content, "TransfersFailed"),
        bytes_transferred=_count(content, "TotalBytesTransferred"),
        transfers_total=_count(content, "TotalTransfers"),
    )


def _failed_transfer_reasons(content: dict) -> list[str]:
    reasons = []
    for failed in content.get("FailedTransfers") or []:
        if not isinstance(failed, dict):
            continue
        source = _without_query(str(failed.get("Src") or failed.get("Source") or "?"))
        code = failed.get("ErrorCode")
        reasons.append(f"{source}: failed" + (f" ({code})" if code else ""))
    return reasons


def parse_output(text: str) -> tuple[JobSummary | None, list[str]]:
    """Read the stdout of `azcopy ... --output-type json`.

    Returns the job's final summary (None when AzCopy stopped before reporting one, as it
    does when the source cannot be read at all) and the error messages it printed, each one
    line and redacted: `Error` messages, `Info` notes about a failed HTTP request, and lines
    that are not JSON (AzCopy prints some errors, such as a wrong flag, as plain text
    whatever the output type).
    """
    summary: JobSummary | None = None
    errors: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        try:
            message = json.loads(line)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            errors.append(redact(one_line(line)))
            continue
        kind = message.get("MessageType")
        content = message.get("MessageContent")
        if kind == "Error":
            errors.append(redact(one_line(str(content or "unknown error"))))
        elif kind == "Info" and _FAILURE_NOTE.search(str(content)):
            # AzCopy reports some failures only as notes, e.g. a SAS that may not write:
            # the job then ends "Cancelled" with no failed transfer counted.
            errors.append(redact(one_line(str(content).removeprefix("INFO: "))))
        elif kind == "EndOfJob":
            try:
                details = json.loads(content) if isinstance(content, str) else content
            except ValueError:
                details = None
            if not isinstance(details, dict):
                errors.append(redact(one_line(f"unreadable job summary: {content}")))
                continue
            summary = _summary(details)
            if details.get("ErrorMsg"):
                errors.append(redact(one_line(str(details["ErrorMsg"]))))
            errors.extend(redact(reason) for reason in _failed_transfer_reasons(details))
    return summary, errors


def parse_job_log(text: str) -> list[str]:
    """The failed transfers recorded in an AzCopy job log, one redacted line each.

    AzCopy's JSON output counts failed transfers but seldom says why; its log does, in
    lines like `ERR: [P#0-T#1] DOWNLOADFAILED: URL : 404 : The specified blob does not exist.`
    """
    reasons = []
    for line in text.splitlines():
        match = _FAILED_TRANSFER.search(line)
        if match:
            reasons.append(redact(_REQUEST_ID.sub("", match.group(1)).strip()))
    return reasons


def _without_query(location: str) -> str:
    """A URL without its query (the SAS), for messages; local paths pass unchanged."""
    if "://" in location:
        return location.split("?", 1)[0]
    return location


def _listed_entries(list_of_files: Path) -> int:
    try:
        text = list_of_files.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise TransferError(f"cannot read the list of files {list_of_files}: {exc}") from exc
    return len({line.strip() for line in text.splitlines() if line.strip()})


def _read_job_logs(log_dir: Path) -> list[str]:
    reasons: list[str] = []
    try:
        logs = sorted(log_dir.glob("*.log"))
    except OSError:
        return reasons
    for path in logs:
        try:
            with path.open("rb") as handle:
                text = handle.read(_MAX_LOG_BYTES).decode("utf-8", errors="replace")
        except OSError:
            continue
        reasons.extend(parse_job_log(text))
    return reasons


async def _stop_process(process: Child) -> None:
    """Stop AzCopy when its job is cancelled: SIGTERM, then SIGKILL if it lingers.

    Call it shielded; it returns once the process has exited.
    """
    with contextlib.suppress(OSError):  # already gone
        process.terminate()
    with trio.move_on_after(_TERM_GRACE):
        await process.wait()
        return
    logger.warning("AzCopy (pid %s) ignored SIGTERM for %s s: killing it", process.pid,
                   _TERM_GRACE)
    with contextlib.suppress(OSError):
        process.kill()
    await process.wait()


async def _read_all(stream: trio.abc.ReceiveStream, into: bytearray) -> None:
    async for chunk in stream:
        into += chunk


async def _read_output(stream: trio.abc.ReceiveStream, into: bytearray,
                       on_progress: Callable[[JobSummary], None]) -> None:
    """Collect AzCopy's stdout, handing each Progress message to `on_progress` as it comes."""
    start = 0
    async for chunk in stream:
        into += chunk
        while (end := into.find(b"\n", start)) >= 0:
            summary = _progress(bytes(into[start:end]))
            start = end + 1
            if summary is not None:
                try:
                    on_progress(summary)
                except Exception:
                    logger.exception("AzCopy progress callback failed")


def _progress(line: bytes) -> JobSummary | None:
    """The counters of one `Progress` line of AzCopy's JSON output, else None."""
    try:
        message = json.loads(line)
        if message.get("MessageType") != "Progress":
            return None
        content = message.get("MessageContent")
        details = json.loads(content) if isinstance(content, str) else content
    except (ValueError, AttributeError):
        return None
    return _summary(details) if isinstance(details, dict) else None


_jobs_started = 0


def jobs_started() -> int:
    """How many AzCopy jobs this process has started (for `status`)."""
    return _jobs_started


class AzCopy:
    """Runs AzCopy jobs, one subprocess each, with their files kept under `work_dir`."""

    def __init__(
        self,
        binary: Path,
        work_dir: Path,
        *,
        threads: Threads,
        concurrency: int | None = None,
        block_size_mb: float | None = None,
        stall_timeout: float | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.binary = Path(binary)
        self.threads = threads  # the daemon's: reading a job's logs blocks
        self.metrics = metrics
        self.work_dir = Path(work_dir)
        self.concurrency = concurrency
        self.block_size_mb = block_size_mb
        #: a job whose counters stand still this many seconds is stopped (None: never):
        #: AzCopy itself retries an account that does not answer for many minutes
        self.stall_timeout = stall_timeout

    def _environment(self, job_dir: Path, login: Mapping[str, str]) -> dict[str, str]:
        env = dict(os.environ)
        # A job logs in only when told to (`login`): one given a SAS uses that.
        env.pop("AZCOPY_AUTO_LOGIN_TYPE", None)
        env.update(login)
        env.update(
            {
                # Logs and job plans go to the job's folder, which is removed after the job.
                "AZCOPY_LOG_LOCATION": str(job_dir / "logs"),
                "AZCOPY_JOB_PLAN_LOCATION": str(job_dir / "plans"),
                # AzCopy keeps `~/.azcopy/pids/PID.pid` while it runs whatever the two above
                # say; a HOME of its own keeps that in the job's folder too.
                "HOME": str(job_dir),
                # No copy of each job's log in the system log.
                "AZCOPY_DISABLE_SYSLOG": "true",
            }
        )
        # With `AZCOPY_AUTO_LOGIN_TYPE=AZCLI` AzCopy asks the Azure CLI, which looks in HOME.
        if os.environ.get("HOME"):
            env.setdefault("AZURE_CONFIG_DIR", os.path.join(os.environ["HOME"], ".azure"))
        if self.concurrency is not None:
            env["AZCOPY_CONCURRENCY_VALUE"] = str(self.concurrency)
        return env

    def _command(
        self,
        source: str,
        destination: str,
        from_to: str,
        list_of_files: Path | None,
        extra_args: Sequence[str],
    ) -> list[str]:
        command = [
            str(self.binary),
            "copy",
            source,
            destination,
            "--from-to",
            from_to,
            "--output-type",
            "json",
            # Never ask the internet for a newer AzCopy (10.32 only does when told to).
            "--skip-version-check",
            # The log is only read for the reasons of failed transfers.
            "--log-level",
            "WARNING",
        ]
        if from_to == "BlobLocal":
            # A blob with a Content-MD5 whose bytes do not match it fails the transfer
            # (AzCopy's default today; said here so that no default can change it).
            command += ["--check-md5", "FailIfDifferent"]
        elif from_to == "LocalBlob":
            # Every blob we put has a Content-MD5: downloads are checked against it.
            command += ["--put-md5"]
        if list_of_files is not None:
            command += ["--list-of-files", str(list_of_files)]
        if self.block_size_mb is not None:
            command += ["--block-size-mb", f"{self.block_size_mb:g}"]
        command += list(extra_args)
        return command

    async def copy(
        self,
        source: str,
        destination: str,
        *,
        from_to: str,
        list_of_files: Path | None = None,
        extra_args: Sequence[str] = (),
        on_progress: Callable[[JobSummary], None] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> JobSummary:
        """Copy `source` to `destination` in one AzCopy job; return its summary.

        `from_to` is AzCopy's `--from-to` (`BlobLocal`, `LocalBlob`, ...). With
        `list_of_files`, the job copies each path listed there (one a line, relative to
        `source`); a listed path that does not exist fails the job, which AzCopy itself
        would skip silently. Raises TransferError unless every transfer completed.
        `on_progress` gets AzCopy's counters each time it reports them (every few
        seconds). `env` is added to AzCopy's environment: how it logs in (an
        AZCOPY_AUTO_LOGIN_TYPE, for a URL without a SAS). Cancelling the calling scope
        stops AzCopy.
        """
        global _jobs_started
        expected = _listed_entries(list_of_files) if list_of_files is not None else 0
        what = f"AzCopy {from_to} {_without_query(source)} -> {_without_query(destination)}"
        command = self._command(source, destination, from_to, list_of_files, extra_args)

        job_dir = self.work_dir / f"job-{uuid.uuid4().hex[:12]}"
        try:
            self.work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            job_dir.mkdir(mode=0o700)
        except OSError as exc:
            raise TransferError(
                f"{what}: cannot make a job folder in {self.work_dir}: {exc}"
            ) from exc
        try:
            logger.debug("%s: running %s", job_dir.name, redact(shlex.join(command)))
            started = trio.current_time()
            _jobs_started += 1
            if self.metrics is not None:
                self.metrics.azcopy_job(from_to, listed=list_of_files is not None)
            returncode, stdout, stderr = await self._run(command, job_dir, what, on_progress,
                                                         env or {})
            elapsed = trio.current_time() - started
            summary, errors = parse_output(stdout)
            logger.debug(
                "%s: exit %s after %.2f s: %s", job_dir.name, returncode, elapsed, summary
            )
            if summary is not None and self.metrics is not None:
                self.metrics.azcopy_bytes(from_to, summary.bytes_transferred)
            if summary is not None and summary.ok and returncode == 0:
                if summary.transfers_total < expected:
                    raise TransferError(
                        f"{what}: only {summary.transfers_total} of the {expected} files listed"
                        f" in {list_of_files} exist at the source"
                    )
                return summary
            # The job log says why each failed transfer failed; the output seldom does.
            errors = await self.threads.run_sync(_read_job_logs, job_dir / "logs") + errors
            reason = _failure(summary, returncode, errors, stderr)
            raise TransferError(redact(f"{what}: {reason}"))
        finally:
            shutil.rmtree(job_dir, ignore_errors=True)

    async def _run(self, command: list[str], job_dir: Path, what: str,
                   on_progress: Callable[[JobSummary], None] | None,
                   login: Mapping[str, str]) -> tuple[int, str, str]:
        """Run AzCopy to its end; its exit status, stdout and stderr."""
        try:
            # Tied to the daemon: a kill -9 of it leaves no AzCopy running.
            process = Child(command, env=self._environment(job_dir, login))
        except OSError as exc:
            raise TransferError(f"{what}: cannot run {self.binary}: {exc}") from exc
        stdout, stderr = bytearray(), bytearray()
        watch = _Stall(on_progress)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_read_output, process.stdout, stdout, watch.progress)
                nursery.start_soon(_read_all, process.stderr, stderr)
                if self.stall_timeout is not None:
                    nursery.start_soon(watch.guard, self.stall_timeout, nursery.cancel_scope)
                await process.wait()
                watch.scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                if process.returncode is None:
                    await _stop_process(process)
                await process.aclose()
        if watch.stalled:
            raise TransferError(f"{what}: no progress for {self.stall_timeout:g} s; stopped")
        if process.returncode is None:  # waited for, or stopped, above
            raise TransferError(f"{what}: ended with no exit status")
        return (process.returncode, stdout.decode("utf-8", errors="replace"),
                stderr.decode("utf-8", errors="replace"))


class _Stall:
    """Watches a job's counters; `guard` stops the job when they stand still."""

    def __init__(self, on_progress: Callable[[JobSummary], None] | None) -> None:
        self._on_progress = on_progress
        self._seen: tuple[int, int] | None = None
        self._changed = trio.current_time()
        self.scope = trio.CancelScope()  # the guard's: cancelled when the job ends
        self.stalled = False

    def progress(self, summary: JobSummary) -> None:
        counters = (summary.transfers_completed, summary.bytes_transferred)
        if counters != self._seen:
            self._seen = counters
            self._changed = trio.current_time()
        if self._on_progress is not None:
            self._on_progress(summary)

    async def guard(self, limit: float, job: trio.CancelScope) -> None:
        with self.scope:
            while (idle := trio.current_time() - self._changed) < limit:
                await trio.sleep(limit - idle)
            self.stalled = True
            job.cancel()


def _failure(summary: JobSummary | None, returncode: int, errors: list[str], stderr: str) -> str:
    """Why a job failed, in one line."""
    if summary is None:
        head = "failed"
    elif summary.transfers_failed:
        head = (
            f"{summary.transfers_failed} of {summary.transfers_total or '?'} transfers failed"
            f" ({summary.status})"
        )
    else:
        head = f"ended {summary.status}"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = str(-returncode)
        head += f", AzCopy killed by {name}"
    elif summary is not None and summary.ok:
        head += f", but AzCopy exited {returncode}"
    reasons = [error for error in errors if error]
    if not reasons:
        first_stderr = next((ln.strip() for ln in stderr.splitlines() if ln.strip()), "")
        if first_stderr:
            reasons = [redact(first_stderr)]
    if not reasons:
        return f"{head} (exit {returncode}, no reason given)" if summary is None else head
    quoted = "; ".join(reasons[:_MAX_REASONS])
    more = len(reasons) - _MAX_REASONS
    if more > 0:
        quoted += f" (and {more} more)"
    return f"{head}: {quoted}"
