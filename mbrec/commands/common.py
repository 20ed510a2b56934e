"""What the commands share: the rules for a directory of outputs.

A run's outputs never overwrite a previous report unless asked (--force), never overwrite an
input, and never appear half-written: everything is written into a temporary directory beside
the target (inside it, when it already exists) and moved into place once all of it is written.
A failed or interrupted run leaves the target as it was.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import shutil
import tempfile

from mbrec.errors import MbrecError

MANIFEST = ".mbrec-outputs"  # the names the last run wrote into the directory, one per line
TEMP_PREFIX = ".mbrec-tmp-"


class OutputDir:
    """The directory a command writes its outputs to (`-o DIR`), checked before any work.

    marker: the file that says the directory holds a run's outputs (e.g. report.json);
    products: name patterns of what a run writes, so that no input of this run is among them.
    """

    def __init__(self, target: str, *, force: bool = False, inputs=(), marker: str,
                 products=(), option: str = "-o"):
        self.target = os.fspath(target)
        self.force, self.marker, self.option = force, marker, option
        self.products = tuple(products) + (marker, MANIFEST)
        self.inputs = [os.path.realpath(p) for p in inputs]
        self._check()

    def _say(self, what: str) -> MbrecError:
        return MbrecError(f"{self.option} {self.target}: {what}")

    def _check(self) -> None:
        t = self.target
        if os.path.exists(t) and not os.path.isdir(t):
            raise self._say("is a file, not a directory: give a directory for the outputs")
        here = os.path.realpath(t)
        for path in self.inputs:
            if os.path.dirname(path) == here and (self._is_product(os.path.basename(path)) or
                                                  os.path.basename(path) in self.previous()):
                raise self._say(f"holds {path}, an input of this run, where the outputs would "
                                "go: choose another directory")
        if self.holds_outputs() and not self.force:
            raise self._say(f"already holds a report ({self.marker}): pass --force to replace "
                            "it, or choose another directory")
        probe = t
        while not os.path.exists(probe):  # the nearest directory that exists must be writable
            probe = os.path.dirname(os.path.abspath(probe))
        if not os.access(probe, os.W_OK | os.X_OK):
            raise self._say(f"cannot write to {probe} (permission denied): choose a directory "
                            "you can write to")

    def _is_product(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.products)

    def holds_outputs(self) -> bool:
        return (os.path.isfile(os.path.join(self.target, self.marker)) or
                os.path.isfile(os.path.join(self.target, MANIFEST)))

    def previous(self) -> list[str]:
        """What the last run wrote here, from its manifest (or just the marker)."""
        try:
            with open(os.path.join(self.target, MANIFEST)) as f:
                names = [n for n in f.read().splitlines() if n and os.sep not in n]
        except OSError:
            names = []
        return names + [self.marker]

    @contextlib.contextmanager
    def writing(self):
        """A fresh directory to write every output into; moved into place on success."""
        try:
            if os.path.isdir(self.target):
                tmp = tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=self.target)
            else:
                parent = os.path.dirname(os.path.abspath(self.target))
                os.makedirs(parent, exist_ok=True)
                tmp = tempfile.mkdtemp(prefix=TEMP_PREFIX + os.path.basename(self.target) + "-",
                                       dir=parent)
        except OSError as e:
            raise self._say(f"cannot create it: {e.strerror}") from None
        try:
            yield tmp
            self._commit(tmp)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise self._say(f"cannot write the outputs ({e.strerror}{': ' + e.filename if e.filename else ''}); "
                            "nothing was changed there") from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _commit(self, tmp: str) -> None:
        names = sorted(os.listdir(tmp))
        with open(os.path.join(tmp, MANIFEST), "w") as f:
            f.write("".join(n + "\n" for n in names))
        if not os.path.exists(self.target):
            os.rename(tmp, self.target)
            return
        for name in self.previous() if self.force else ():
            path = os.path.join(self.target, name)
            if os.path.realpath(path) not in self.inputs and os.path.isfile(path):
                os.remove(path)
        for name in names + [MANIFEST]:
            dest = os.path.join(self.target, name)
            if os.path.realpath(dest) in self.inputs:
                raise self._say(f"{dest} is an input of this run: choose another directory")
            os.replace(os.path.join(tmp, name), dest)
        os.rmdir(tmp)
