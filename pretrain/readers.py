"""Pretraining corpus readers: a Tianchi TSV (header with a `text` column), the same TSV damaged by a spreadsheet
(every line quoted, CRLF, long records split), or plain text with one document per line.

Every format strips a UTF-8 byte-order mark, and a line that is not UTF-8 is named (file and line) instead of
"'utf-8' codec can't decode byte 0x93". Files are streamed in ~8 MB chunks.
"""

CHUNK_BYTES = 8 << 20             # read the corpus ~8 MB at a time
BOM = b"\xef\xbb\xbf"  # a UTF-8 byte-order mark, which Windows editors put at the start of a file


def detect_format(path):
    """Returns ("tsv", index of the `text` column) if the header names a `text` column, ("quoted-tsv", index) if
    a spreadsheet wrapped every line of such a TSV in double quotes, else ("lines", None). A first line of several
    tab-separated cells none of which is `text` is refused: read as plain text, its labels and header would be
    trained on as tokens. So is the `label,text` header of a comma-separated file, for the same reason."""
    with open(path, "rb") as f:
        head = f.read(1 << 20)
    if b"\r" in head and b"\n" not in head:  # read as one line: a 1-document corpus, said as "too few documents"
        raise ValueError(f"corpus {path}: its lines end in a bare carriage return (CR, old Mac line endings), which "
                         f"no reader splits on; convert them to LF, e.g. tr '\\r' '\\n' < old > new")
    names, quoted = header_names(path)
    if "text" not in names:
        if len(names) > 1:
            shown = ", ".join(repr(name[:20]) for name in names[:4]) + (", ..." if len(names) > 4 else "")
            raise ValueError(f"corpus {path}: its first line has {len(names)} tab-separated cells ({shown}) and "
                             f"none is named `text`; as plain text, every label and the header would become "
                             f"tokens: name the text column `text` in a header line (a Tianchi file without one: "
                             f"add `label<TAB>text` on top), or remove the tabs if each line is one document")
        commas = [cell.strip().strip('"') for cell in names[0].split(",")]
        header = len(commas) > 1 and "text" in commas and all(cell and " " not in cell for cell in commas)
        if header:  # `label,text`: read as lines, each label would be glued to a token
            raise ValueError(f"corpus {path}: its first line {names[0][:40]!r} is the header of a COMMA-separated "
                             f"file; pretraining reads tab-separated columns (or one document per line): convert "
                             f"it, e.g. python -c \"import csv, sys; csv.writer(sys.stdout, delimiter='\\t', "
                             f"lineterminator='\\n').writerows(csv.reader(sys.stdin))\" < in.csv > out.tsv")
        return ("lines", None)
    return ("quoted-tsv" if quoted else "tsv", names.index("text"))


def header_names(path) -> tuple[list[str], bool]:
    """The tab-separated cells of the first line (a BOM dropped), and whether a spreadsheet quoted the whole line
    (its quotes dropped too)."""
    with open(path, "rb") as f:
        header = f.readline().removeprefix(BOM).rstrip(b"\r\n")
    quoted = len(header) >= 2 and header.startswith(b'"') and header.endswith(b'"')
    cells = (header[1:-1] if quoted else header).split(b"\t")
    return [name.strip().decode("utf-8", "replace") for name in cells], quoted


def _unquote_records(lines, first_line_number, pending, path):
    """A spreadsheet-damaged Tianchi file: every record is `"label<TAB>text"`, and a record longer than the cell
    limit (32,767 characters) was cut, its remainder on the next, UNQUOTED line. Rejoins those (SOURCE.md of the
    Tianchi sample describes the damage). Anything else is refused, naming the line: never half-read a file.

    Args:
        lines: raw lines (CR/LF already stripped); first_line_number: the 1-based line number of lines[0].
        pending: the record still open from the previous chunk ([] or [bytes]).
    Returns:
        (complete records, the record still open).
    """
    records = []
    for offset, line in enumerate(lines):
        if len(line) >= 2 and line.startswith(b'"') and line.endswith(b'"') and b'"' not in line[1:-1]:
            records.extend(pending)
            pending = [line[1:-1]]
        elif pending and b'"' not in line and b"\t" not in line:
            pending = [pending[0] + line]  # the cut-off remainder (the cut may fall inside a token: no space)
        else:
            raise ValueError(f"{path}: line {first_line_number + offset} breaks the quoted-TSV layout of this file "
                             f"(every record \"label<TAB>text\", a long one continued on the next unquoted line); "
                             f"fix that line, or re-save the file as plain tab-separated text")
    return records, pending


def iter_text_chunks(path, corpus_format):
    """Streams a corpus as lists of document texts (bytes), ~CHUNK_BYTES at a time.

    Args:
        path: the corpus file.
        corpus_format: ("tsv" or "quoted-tsv", text column) or ("lines", None), see `detect_format`.
    Yields:
        (texts, bytes_read): a list of bytes objects, one per document, and the file bytes they came from.
    """
    kind, column = corpus_format
    width = len(header_names(path)[0]) if kind != "lines" else 0  # a TSV's cells per line
    with open(path, "rb") as f:
        line_number = 0
        pending_bytes = 0
        if kind != "lines":
            pending_bytes = len(f.readline())  # the header, counted with the first chunk
            line_number = 1
        open_record = []
        first = True
        while True:
            lines = f.readlines(CHUNK_BYTES)
            if first and lines and kind == "lines":
                lines[0] = lines[0].removeprefix(BOM)  # or "\ufeff83" becomes a token
            first = False
            bytes_read = pending_bytes + sum(len(line) for line in lines)
            stripped = [line.rstrip(b"\r\n") for line in lines]
            if kind == "quoted-tsv":
                stripped, open_record = _unquote_records(stripped, line_number + 1, open_record, path)
                if not lines:  # end of file: the last record is complete
                    stripped, open_record = open_record, []
            if not stripped and not lines:
                return
            texts = []
            for index, line in enumerate(stripped):  # one step per document, never per token
                if not line.strip():  # a blank line (a trailing one, say) is no document, in either layout
                    continue
                if kind == "lines":
                    texts.append(line)
                    continue
                fields = line.split(b"\t")
                where = f"line {line_number + index + 1}" if kind == "tsv" else "a record"
                if len(fields) <= column:
                    raise ValueError(f"{path}: {where} has {len(fields)} tab-separated field(s), the `text` column "
                                     f"is number {column + 1}; fix or delete that line")
                if len(fields) > width:  # the cells after a tab inside the text would be dropped unseen
                    raise ValueError(f"{path}: {where} has {len(fields)} tab-separated fields, more than the "
                                     f"header's {width}; a tab inside a text would cut it there: replace it with a "
                                     f"space")
                texts.append(fields[column])
            line_number += len(lines)
            yield texts, bytes_read
            pending_bytes = 0


def decode_texts(texts, path):
    """Bytes -> str for the tokenizer path; a decode error names the file and the first bad line."""
    try:
        return [text.decode("utf-8") for text in texts]
    except UnicodeDecodeError:
        raise ValueError(first_undecodable_line(path)) from None


def first_undecodable_line(path):
    """The one-line message for the first line of `path` that is not UTF-8 (read again only on error)."""
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as error:
                return (f"{path}: line {number} is not UTF-8 text ({error.reason} at byte {error.start}: "
                        f"{line[max(error.start - 8, 0):error.start + 8]!r}); re-save the file as UTF-8, or check "
                        f"it is a text corpus and not a binary file")
    return f"{path}: not UTF-8 text; re-save the file as UTF-8"
