"""One pass of the daemon: the reconcile of `apply`, from the unit directory or, while that holds
a bad file, from the last good copy of it; every outcome becomes journal lines."""

from __future__ import annotations

from dataclasses import dataclass

from sandman.daemon import lastgood
from sandman.daemon.journal import Journal, JournalProgress
from sandman.daemon.schedule import Pass
from sandman.errors import ApplyError, SandmanError, UnitError
from sandman.paths import Paths


@dataclass
class Passes:
    """Runs the daemon's passes and keeps what the journal has already been told."""

    directory: str
    paths: Paths
    journal: Journal
    bad_units: str | None = None  # the problems last reported, so each is logged once

    def run(self, job: Pass) -> None:
        """Never raises for what a unit or the host did wrong: the daemon logs it and goes on."""
        what = job.reason if job.target is None else f"{job.reason}: sandbox/{job.target}"
        try:
            self._run(job, what)
        except (SandmanError, OSError) as exc:
            self.journal.error(f"{what}: {exc}")

    def _run(self, job: Pass, what: str) -> None:
        try:
            summary = self._reconcile(self.directory, job)
        except ApplyError:
            # The units were read without a problem; the host failed an action.
            self._units_good()
            raise
        except UnitError as exc:
            self._report_units(exc)
            fallback = lastgood.saved(self.paths.state_dir)
            if fallback is None:
                self.journal.warning(
                    f"{what}: nothing applied: no good unit files were seen since boot"
                )
                return
            summary = self._reconcile(fallback, job)
        else:
            self._units_good()
        if summary:
            self.journal.info(f"{what}: {summary}")
        else:
            self.journal.debug(f"{what}: no changes")

    def _units_good(self) -> None:
        if self.bad_units is not None:
            self.journal.notice(f"{self.directory}: the unit files are valid again")
            self.bad_units = None
        try:
            lastgood.save(self.directory, self.paths.state_dir)
        except OSError as exc:
            self.journal.warning(f"the last good unit files were not kept: {exc}")

    def _reconcile(self, directory: str, job: Pass) -> str:
        from sandman.reconcile import reconcile

        def waiting() -> None:
            self.journal.notice(f"waiting for `{self.paths.state_dir}/lock` (an apply runs)")

        progress = JournalProgress(self.journal)
        result = reconcile(self.paths, directory, progress, target=job.target, on_wait=waiting)
        return result.done()

    def _report_units(self, exc: UnitError) -> None:
        """Each problem on a line of its own (file:line: key: what; hint), once per change."""
        text = str(exc)
        if text == self.bad_units:
            self.journal.debug(f"{self.directory}: still invalid; the last good units stay")
            return
        self.bad_units = text
        self.journal.error(text)
        self.journal.warning(
            f"{self.directory}: {len(exc.problems)} problem(s) found; nothing of it is applied, "
            "what runs keeps running from the last good unit files"
        )
