"""Request bodies by their Content-Type: JSON, or what clients of other serving tools send as it is: a CSV
table's rows (MLflow's scoring server takes text/csv), an image file (TorchServe's `curl -T kitten.jpg`), a
text (a model of text; a language model's prompt). The predictors (predictor.py) decide which their model
takes; this module reads the header and a CSV body into the rows JSON would have carried."""

from __future__ import annotations

import codecs
import csv
import io
import mimetypes

from orchestrator.errors import RequestError
from orchestrator.tablefiles import SNIFF_BYTES, csv_dialect

JSON, CSV, TEXT = "application/json", "text/csv", "text/plain"
IMAGE = "image/*"  # image/png, image/jpeg, ...: any format Pillow reads
FORM = "multipart/form-data"  # files and fields, each one of the above
BYTES = "application/octet-stream"  # says nothing of what a file holds
# What a body is sent as where the client says nothing of it: no Content-Type (requests' data=, curl -T),
# application/octet-stream, or curl -d's form type. Such a body is read by its first bytes (`sniffed`).
UNSAID = ("", BYTES, "application/x-www-form-urlencoded")
IMAGE_STARTS = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM", b"II*\x00", b"MM\x00*")  # PNG JPEG GIF BMP TIFF


def media_type(header: str) -> tuple[str, str]:
    """(the media type, lower case, its parameters left out; the charset, default UTF-8) of a Content-Type
    header: `text/csv; charset=latin-1` gives ("text/csv", "latin-1"). 415 for a charset that is no text encoding
    Python knows."""
    kind, *params = [part.strip() for part in header.split(";")]
    charset = next((v.strip('"') for k, _, v in (p.partition("=") for p in params) if k.strip().lower() == "charset"),
                   "utf-8")
    try:
        text = codecs.lookup(charset)._is_text_encoding  # base64 and the like turn bytes into bytes
    except LookupError:
        text = False
    if not text:
        raise RequestError(415, "unsupported_charset", f"charset {charset!r} is not a text encoding this endpoint "
                           "knows: send the body in UTF-8")
    return kind.lower(), charset


def sniffed(kind: str, body: bytes) -> str:
    """The type of a body sent without saying it (UNSAID), by its first bytes, as TorchServe and TF Serving
    take such bodies: a JSON object, or an image file (`curl -T cat.jpg`); else `kind`, for `check` to refuse
    with the types it takes."""
    if kind not in UNSAID:
        return kind
    if body.lstrip()[:1] == b"{":
        return JSON
    if body.startswith(IMAGE_STARTS) or (body[:4] == b"RIFF" and body[8:12] == b"WEBP"):
        return IMAGE
    return kind


def matches(kind: str, accepted: str) -> bool:
    return kind == accepted or (accepted.endswith("/*") and kind.startswith(accepted[:-1]))


def check(kind: str, accepted: dict[str, str]) -> None:
    """415 naming the types the model takes (`accepted`: what a body of each holds), where `kind` is none."""
    if not any(matches(kind, a) for a in accepted):
        listed = "; ".join(f"{a} ({what})" for a, what in accepted.items())
        unsaid = (" and a body that is neither a JSON object nor an image file: name its type in the Content-Type "
                  "header") if kind in UNSAID else ""
        raise RequestError(415, "unsupported_media_type", f"this model takes Content-Type {listed}; got "
                           f"{kind or 'none'!r}{unsaid}")


def each_part(body: bytes, content_type: str, decode) -> list:
    """decode(part, its Content-Type) of each part of a multipart/form-data body (`curl -F file=@cat.jpg`,
    TorchServe's clients; a browser's form; requests' `files=`), in order. A part's type is the one it
    declares, else its file name's (curl and requests send a CSV file as application/octet-stream, or with
    none); a field without a file is text. A part's error names it."""
    import email.parser
    import email.policy

    head = f"Content-Type: {content_type}\r\n\r\n".encode("latin-1", errors="replace")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    parts = list(message.iter_parts()) if message.is_multipart() else []
    if not parts:
        raise RequestError(400, "invalid_form", "the body is not multipart/form-data with a boundary its "
                           "Content-Type names: send files as a client's form does (curl -F file=@cat.jpg)")
    decoded = []
    for i, part in enumerate(parts):
        name = part.get_filename() or part.get_param("name", header="content-disposition") or f"part {i + 1}"
        declared = part.get_content_type() if part.get("content-type") else None
        kind = declared if declared not in (None, BYTES) else (
            mimetypes.guess_type(part.get_filename())[0] if part.get_filename() else TEXT)
        payload = part.get_payload(decode=True) or b""
        kind = sniffed(BYTES, payload) if kind in (None, BYTES) else kind  # a photo without a suffix: its bytes
        if kind == BYTES or kind.startswith("multipart/"):
            raise RequestError(415, "unsupported_media_type", f"form part {name!r}: cannot tell what it holds: "
                               "name its file for its kind (.csv, .png, .jpg, .txt) or give it a Content-Type")
        charset = part.get_content_charset()
        try:
            decoded.append(decode(payload, kind + (f"; charset={charset}" if charset else "")))
        except RequestError as e:
            raise RequestError(e.status, e.code, f"form part {name!r}: {e.message}") from None
    return decoded


def text_of(body: bytes, charset: str) -> str:
    """The body as text in its charset; 400 where it is not."""
    try:
        return body.decode(charset).removeprefix("\ufeff")  # Excel's CSV starts with a byte-order mark
    except UnicodeDecodeError as e:
        raise RequestError(400, "invalid_text", f"the body is not {charset} text (bytes {e.start}-{e.end}): send "
                           "it in UTF-8, or name its charset in the Content-Type header") from None


def csv_rows(text: str, names: list[str], texts: set = frozenset()) -> list:
    """A CSV body's rows: objects keyed by column name where its first row names any of `names` (the model's
    columns), as JSON's `instances` carry a table's rows; else, with no header, lists (of numbers: a row of
    the model's input, flat). The delimiter and decimal point are found as training's reader finds them
    (tablefiles.csv_dialect: a semicolon file with decimal commas, as Excel writes in much of Europe). Cells are
    numbers but in the columns of `texts` (categories, dates, free text): `_cell`."""
    delimiter, decimal = csv_dialect(text[:SNIFF_BYTES], "csv")
    try:
        rows = [row for row in csv.reader(io.StringIO(text), delimiter=delimiter) if row]  # blank lines: none
    except csv.Error as e:
        raise RequestError(400, "invalid_csv", f"the body is not CSV: {e}") from None
    if not rows:
        raise RequestError(422, "no_instances", "the CSV body holds no rows: send a header row, then a row per input")
    header = [cell.strip() for cell in rows[0]]
    if set(header) & set(names):
        if odd := next((i for i, row in enumerate(rows[1:], 2) if len(row) != len(header)), None):
            raise RequestError(422, "invalid_csv", f"row {odd} of the CSV body holds {len(rows[odd - 1])} cells, its "
                               f"header {len(header)}")
        return [{name: _cell(cell, decimal, name not in texts) for name, cell in zip(header, row, strict=True)}
                for row in rows[1:]]
    cells = [[_cell(cell, decimal, True) for cell in row] for row in rows]
    if names and any(isinstance(v, str) for row in cells for v in row):
        shown = ",".join(names[:8]) + (",..." if len(names) > 8 else "")
        raise RequestError(422, "missing_header", f"the CSV body's first row names none of the model's columns: start "
                           f"it with a header row ({shown}), then a row per input")
    return cells


def _cell(cell: str, decimal: str, as_number: bool):
    """A CSV cell as JSON would carry it: in a column of numbers, a number (int or float), null where blank, or
    the text, for the model to refuse by name; elsewhere the text (a blank cell of a column of categories is
    the category "", as training read it). Spaces beside a separator are layout, as training's reader
    takes them."""
    value = cell.strip()
    if not as_number:
        return value
    if not value:
        return None
    for number in (int, float):
        try:
            return number(value.replace(",", ".") if decimal == "," and number is float else value)
        except ValueError:
            pass
    return value
