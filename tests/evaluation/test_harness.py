"""lm-evaluation-harness itself against the toolkit: its rolling windows, its WikiText detokenizer, its
`wikitext` task's figures (word and byte perplexity, bits per byte) reproduced by `eval --by-document` to
1e-6, and harness tasks run by `eval --task` on the base, adapters in memory, a mix and a merged folder.

Everything runs offline: the tasks are defined in folders written here over local JSON lines (the harness's
own task functions where it has them), on the tiny GPT-2 of conftest.py.
"""

import json
import re
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, SUBJECTS
from helpers import error_lines, results_of, run_cli, tree
from transformers import AutoModelForCausalLM, AutoTokenizer

from toolkit.data.detokenize import wikitext
from toolkit.evaluation.protocol import text_windows

lm_eval = pytest.importorskip("lm_eval", reason="the test extra installs lm-evaluation-harness")
from lm_eval.tasks.wikitext.preprocess_wikitext import wikitext_detokenizer
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

PARITY = 1e-6  # relative: the harness sums log-probabilities in fp32, the toolkit in float64
SHARED = REPO.parent / "shared" / "data" / "wikitext-2" / "test.txt"


def wiki_pages(corpus_dir: Path, count: int = 5) -> list[str]:
    """Pages written as WikiText writes them: a heading, tokenized punctuation, @-@ and @,@ separators,
    spaced brackets and quotes, a line per paragraph; from 3 to about 300 tokens of the tiny BPE."""
    lines = (corpus_dir / "valid.txt").read_text().splitlines()
    pages = []
    for n in range(count):
        body = " ".join(lines[n * 9 : n * 9 + 2 * n + 1]).replace(".", " .")
        pages.append(
            f' = {SUBJECTS[n].title()} = \n \n {body} The 2 @,@ 000 red @-@ balls ( {n} ) , " said " '
            f"the bird 's sister . \n"
        )
    pages.append(" = Short = \n")
    return pages


def write_task(folder: Path, name: str, documents: list[dict], yaml_lines: list[str], utils: str) -> Path:
    """A harness task in a folder of its own over local JSON lines: what `--include-path` points at."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.jsonl").write_text("".join(json.dumps(d) + "\n" for d in documents))
    (folder / "utils.py").write_text(utils)
    (folder / f"{name}.yaml").write_text(
        "\n".join(
            [
                f"task: {name}",
                "dataset_path: json",
                "dataset_kwargs:",
                "  data_files:",
                f"    test: {folder / name}.jsonl",
                "test_split: test",
                *yaml_lines,
                "",
            ]
        )
    )
    return folder


# The harness's own wikitext task functions (its detokenizer, its counting), on local documents.
WIKITEXT_UTILS = """from lm_eval.tasks.wikitext.preprocess_wikitext import process_results, wikitext_detokenizer


def page(doc):
    return doc["page"]
"""


def wikitext_task(folder: Path, pages: list[str], name: str, detokenize: bool) -> Path:
    target = "utils.wikitext_detokenizer" if detokenize else "utils.page"
    return write_task(
        folder,
        name,
        [{"page": p} for p in pages],
        [
            "output_type: loglikelihood_rolling",
            'doc_to_text: ""',
            f"doc_to_target: !function {target}",
            "process_results: !function utils.process_results",
            "metric_list:",
            "  - metric: word_perplexity",
            "  - metric: byte_perplexity",
            "  - metric: bits_per_byte",
        ],
        WIKITEXT_UTILS,
    )


def harness_figures(model, task_dir: Path, name: str, **model_args) -> dict:
    """lm-evaluation-harness on its own: its HFLM loads the model folder, its TaskManager finds the task."""
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=str(model), device="cpu", batch_size=4, **model_args)
    out = lm_eval.simple_evaluate(
        model=lm,
        tasks=[name],
        log_samples=False,
        task_manager=TaskManager(include_path=str(task_dir), include_defaults=False),
    )
    return {key.split(",")[0]: value for key, value in out["results"][name].items() if key.endswith(",none")}


def test_the_rolling_windows_are_the_harness_own():
    """The disjoint protocol's windows over one document are get_rolling_token_windows' (context_len=1),
    input for input and prediction for prediction, at lengths around and across window boundaries."""
    for length in [1, 2, 31, 32, 33, 64, 65, 100, 129]:
        for context in [1, 8, 32]:
            tokens = list(range(1, length + 1))
            sequence = [0] + tokens  # EOS (0) in front, context only
            theirs = [
                ((ctx + pred)[-(context + 1) :][:-1], pred)  # what HFLM feeds the model, and scores
                for ctx, pred in map(make_disjoint_window, get_rolling_token_windows(tokens, 0, context, 1))
            ]
            ours = [
                (sequence[w.start : w.hi - 1], sequence[w.lo : w.hi])
                for w in text_windows(0, length + 1, context, context)
            ]
            assert ours == theirs, (length, context)


def test_the_wikitext_detokenizer_is_the_harness_own(corpus_dir):
    """The same rewriting as the harness's wikitext_detokenizer, on pages that use every rule and, when the
    shared data is here, on the whole WikiText-2 test split."""
    texts = [
        *wiki_pages(corpus_dir),
        "a ( b ) [ c ] { d } \" e \" ' f ' = = = = g = = = = 5 \u00b0 C N 's \n x s ' /' 1/",
    ]
    if SHARED.exists():
        texts.append(SHARED.read_text())
    for text in texts:
        assert wikitext(text) == wikitext_detokenizer({"page": text})
    assert wikitext(texts[0]) != texts[0]


@pytest.mark.parametrize("detokenize, context", [(False, 64), (True, 32)], ids=["plain-64", "wikitext-detokenized-32"])
def test_eval_by_document_reproduces_the_harness_wikitext_figures(
    tiny_model, corpus_dir, tmp_path, detokenize, context
):
    """The harness's wikitext task (its functions, local pages) and `eval --by-document` on the same pages,
    at the model's context and at a shorter one (documents over several windows): word perplexity, byte
    perplexity and bits per byte agree to 1e-6, counting words and bytes of the original pages."""
    pages = wiki_pages(corpus_dir)
    task = wikitext_task(tmp_path / "tasks", pages, "localwiki", detokenize)
    theirs = harness_figures(tiny_model, task, "localwiki", max_length=context)

    pages_by_document = ["--files", task / "localwiki.jsonl", "--text-column", "page", "--by-document"]
    command = ["eval", "--model", tiny_model, *pages_by_document, "--context", context]
    [ours] = results_of(*command, *(["--detokenize", "wikitext"] if detokenize else []))

    assert ours["words"] == sum(len(re.split(r"\s+", p)) for p in pages)
    assert ours["bytes"] == sum(len(p.encode()) for p in pages)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    scored = [wikitext(p) if detokenize else p for p in pages]
    assert ours["tokens"] == sum(len(tokenizer(s)["input_ids"]) for s in scored)
    assert max(len(tokenizer(s)["input_ids"]) for s in scored) > 3 * context  # several windows per document
    for metric in ("word_perplexity", "byte_perplexity", "bits_per_byte"):
        assert abs(ours[metric] / theirs[metric] - 1) <= PARITY, (metric, ours[metric], theirs[metric])
    if detokenize:  # the rewriting is scored: the figure moves
        [plain] = results_of(*command)
        assert plain["bits_per_byte"] != pytest.approx(ours["bits_per_byte"], rel=1e-3)


def test_harness_tasks_score_adapters_in_memory_beside_perplexity(store, tiny_model, corpus_dir, tmp_path):
    """`eval --task` on the base, two stored adapters and their mix: each task row equals the by-document
    perplexity row of the same model (so the harness scored the adapter that was active, in memory), the
    rows differ, the store is untouched; the task joins the table, the JSON, the CSV and the matrix; a merged
    folder scores as its adapter did."""
    pages = wiki_pages(corpus_dir)
    task = wikitext_task(tmp_path / "tasks", pages, "localwiki", detokenize=False)
    before = tree(store)
    args = [
        "eval",
        "--adapter",
        "quickstart",
        "--adapter",
        "poems",
        "--mix",
        "quickstart=0.5,poems=0.5",
        "--files",
        task / "localwiki.jsonl",
        "--text-column",
        "page",
        "--by-document",
        "--task",
        "localwiki",
        "--include-path",
        task,
        "--csv",
        tmp_path / "out" / "m.csv",
    ]

    rows = results_of(*args)

    assert tree(store) == before
    labels = [None, "quickstart", "poems", "mix quickstart=0.5,poems=0.5"]
    assert [(r["adapter"], r["dataset"]) for r in rows] == [
        (a, d) for a in labels for d in (f"{task / 'localwiki.jsonl'}", "localwiki")
    ]
    texts, tasks = rows[0::2], rows[1::2]
    for text, found in zip(texts, tasks):
        assert found["task"]["metrics"]["bits_per_byte"] == found["bits_per_byte"]
        assert found["protocol"] is None and found["documents"] == len(pages) == text["documents"]
        for metric in ("word_perplexity", "byte_perplexity", "bits_per_byte"):
            assert abs(found[metric] / text[metric] - 1) <= PARITY, (found["adapter"], metric)
    assert len({round(r["bits_per_byte"], 6) for r in texts}) == 4  # four different models were scored

    csv_rows = (tmp_path / "out" / "m.csv").read_text().splitlines()
    assert len(csv_rows) == 9 and csv_rows[0].endswith(",task") and '"{""word_perplexity""' in csv_rows[2]
    assert (tmp_path / "out" / "m.png").read_bytes()[:4] == b"\x89PNG"
    table = run_cli(*args[:-2]).stdout
    matrix = table.split("\n\n")[-1]
    assert "localwiki word_perplexity" in matrix and len(matrix.strip().splitlines()) == 5

    merged = run_cli("merge", "poems", "--out", tmp_path / "merged")
    assert merged.exit_code == 0, merged.output
    [alone] = results_of("eval", "--model", tmp_path / "merged", "--task", "localwiki", "--include-path", task)
    assert alone["bits_per_byte"] == pytest.approx(tasks[2]["bits_per_byte"], rel=1e-5)


MULTIPLE_CHOICE_UTILS = """def choices(doc):
    return doc["choices"]
"""


def test_a_multiple_choice_task_reports_the_harness_accuracy(tiny_model, corpus_dir, tmp_path):
    """A multiple-choice task of one's own: the row carries the harness's acc and acc_norm with their standard
    errors; acc is the share of documents whose right ending the model finds likeliest (checked by hand),
    over the first --limit documents."""
    lines = (corpus_dir / "valid.txt").read_text().splitlines()
    docs = [
        {
            "query": line.split(" ", 2)[0] + " " + line.split(" ", 2)[1],
            "choices": [" " + line.split(" ", 2)[2], " the moon.", " a green door."],
            "gold": n % 3,
        }
        for n, line in enumerate(lines[:8])
    ]
    task = write_task(
        tmp_path / "mc",
        "localchoice",
        docs,
        [
            "output_type: multiple_choice",
            "doc_to_text: '{{query}}'",
            "doc_to_target: '{{gold}}'",
            "doc_to_choice: !function utils.choices",
            "metric_list:",
            "  - metric: acc",
            "  - metric: acc_norm",
        ],
        MULTIPLE_CHOICE_UTILS,
    )

    [row] = results_of("eval", "--model", tiny_model, "--task", "localchoice", "--include-path", task, "--limit", 6)

    assert row["documents"] == 6 and row["perplexity"] is None
    metrics = row["task"]["metrics"]
    assert list(metrics) == ["acc", "acc_norm"] and row["task"]["higher_is_better"] == {"acc": True, "acc_norm": True}
    assert set(row["task"]["stderr"]) == {"acc", "acc_norm"}
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    right = 0
    for doc in docs[:6]:
        context = tokenizer(doc["query"])["input_ids"]
        scores = []
        for choice in doc["choices"]:
            ids = torch.tensor([context + tokenizer(choice)["input_ids"]])
            with torch.no_grad():
                logp = torch.log_softmax(model(ids).logits[0, :-1].double(), -1)
            scores.append(logp[len(context) - 1 :].gather(-1, ids[0, len(context) :, None]).sum().item())
        right += max(range(3), key=scores.__getitem__) == doc["gold"]
    assert metrics["acc"] == pytest.approx(right / 6)
    assert (
        "acc "
        in run_cli("eval", "--model", tiny_model, "--task", "localchoice", "--include-path", task, "--limit", 6).stdout
    )


def test_python_evaluate_takes_a_model_in_memory_and_tasks(store, corpus_dir, tmp_path):
    """toolkit.evaluate(model, tokenizer=..., tasks=...): a loaded adapter scored as it is, a task and a text."""
    import toolkit

    task = wikitext_task(tmp_path / "tasks", wiki_pages(corpus_dir), "localwiki", detokenize=False)
    model, tokenizer = toolkit.load("poems")
    rows = toolkit.evaluate(
        model,
        tokenizer=tokenizer,
        files=[str(task / "localwiki.jsonl")],
        text_column="page",
        by_document=True,
        tasks=["localwiki"],
        include_paths=[str(task)],
    )
    assert [(r.adapter, r.task is None) for r in rows] == [("poems", True), ("poems", False)]
    assert rows[1].task.metrics["bits_per_byte"] == pytest.approx(rows[0].score.bits_per_byte, rel=PARITY)


@pytest.mark.parametrize(
    "task, expected",
    [
        ("wikitext", ["'wikitext'", "not in the local Hugging Face cache", "--include-path"]),
        ("wikitextt", ["no task named 'wikitextt'", "did you mean", "wikitext"]),
    ],
)
def test_a_task_that_cannot_run_fails_in_seconds_with_one_line(tiny_model, task, expected):
    """Offline, the harness's wikitext has no cached data: one line naming the task and the fixes, exit 2,
    nothing printed, in seconds (most of them the harness indexing its own tasks); an unknown name likewise."""
    started = time.perf_counter()
    result = run_cli("eval", "--model", tiny_model, "--task", task)
    assert time.perf_counter() - started < 180  # the harness indexing its tasks: seconds, longer on a busy machine
    assert result.exit_code == 2 and result.stdout == ""
    [line] = error_lines(result.stderr)
    for part in expected:
        assert part in line, line
