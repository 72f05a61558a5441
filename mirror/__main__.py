"""`python -m mirror`: the same as the acta-mirror command."""
import locale
import os
import sys


def utf8_names() -> None:
    """Start this process again in Python's UTF-8 mode when the locale names files in another
    encoding (es_ES.ISO-8859-1, say). A bag's paths are UTF-8 (BagIt): in such a locale a crawl
    wrote `MÉRIDA` as ISO-8859-1 bytes that the manifest's UTF-8 lines, sha256sum and every other
    machine do not find, and verify called an intact copy's accented paths missing. Output
    stays in the locale's encoding."""
    if sys.flags.utf8_mode or sys.getfilesystemencoding().lower().replace("-", "") == "utf8":
        return
    os.environ.setdefault("PYTHONIOENCODING", f"{locale.getpreferredencoding(False)}:backslashreplace")
    os.execv(sys.executable, [sys.executable, "-X", "utf8", *sys.orig_argv[1:]])


def run() -> None:
    utf8_names()
    from .cli import main

    sys.exit(main(leave=True))


if __name__ == "__main__":
    run()
