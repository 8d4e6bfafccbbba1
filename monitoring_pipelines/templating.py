"""The one way the project's Jinja2 templates are loaded: the notifications
(``alerting/templates``), the weekly and monthly reports (``reports/templates``) and the quality
page (``quality/templates``) each render from their own folder with these settings."""

from pathlib import Path


def template_environment(folder: Path):
    """A ``jinja2.Environment`` over the templates in ``folder``: ``.html`` autoescaped, any
    undefined name an error, block tags taking their own line with them, the trailing newline
    kept. jinja2 is imported here, not while the code location loads."""
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=False),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
