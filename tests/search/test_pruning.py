"""search.pruning, the parts that need no Ray: the Wilcoxon test (scipy as the oracle), the
stopping rule, chunked generate-and-judge, per-prompt scores, the value a pruned trial is
ranked by and CMA-ES ranking it, and the config's refusals."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import pytest

from evomerge.config import RunConfig, SearchConfig
from evomerge.exceptions import ConfigError
from evomerge.generate import GenerationParams, PromptItem
from evomerge.judge import JudgingConfig, Score, build_objective
from evomerge.search._driver import report_pruned
from evomerge.search._pipeline import generate_and_judge
from evomerge.search._prune import PruneGuide, fixed_order, pruned_value, should_stop
from evomerge.search._sampler import make_sampler
from evomerge.search._wilcoxon import p_worse
from evomerge.testing.generation import FakeGenerator

from .conftest import make_run


def test_p_worse_agrees_with_scipy_on_ties_zeros_and_both_null_distributions() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = random.Random(0)
    checked = 0
    for _ in range(600):
        n = rng.randint(1, 70)  # exact (<= 50 without ties, <= 13 with) and normal approx.
        if rng.random() < 0.4:
            d = [rng.gauss(-0.3, 1.0) for _ in range(n)]
        else:  # ties and zeros
            d = [rng.choice([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5]) for _ in range(n)]
        if all(x == 0 for x in d):
            continue
        want = float(stats.wilcoxon(d, alternative="less", zero_method="zsplit").pvalue)
        assert p_worse(d) == pytest.approx(want, rel=1e-9, abs=1e-12), d
        checked += 1
    assert checked > 500


def _guide(incumbent: list[float | None] | None, **kw: Any) -> PruneGuide:
    base: dict[str, Any] = {"chunk_size": 2, "p_threshold": 0.1, "n_startup_steps": 4}
    return PruneGuide(incumbent=incumbent, **{**base, **kw})


def test_should_stop_follows_the_wilcoxon_pruner_rules() -> None:
    best: list[float | None] = [1.0, 0.9, 1.1, 1.0, 0.8, 1.2, 1.0, 1.0]
    worse = [0.1, 0.2, 0.0, 0.3, 0.1, 0.2]
    assert should_stop(worse, _guide(None)) == (False, 1.0)  # no incumbent yet
    # 3 negative differences: p = 1/8; not before n_startup_steps (4) pairs
    assert should_stop(worse[:3], _guide(best, p_threshold=0.2))[0] is False
    assert should_stop(worse[:3], _guide(best, p_threshold=0.2, n_startup_steps=3))[0] is True
    stop, p = should_stop(worse[:4], _guide(best))
    assert stop and p == pytest.approx(1 / 16)  # 4 negative differences: exact p = 2^-4
    assert should_stop(worse[:4], _guide(best, p_threshold=0.05))[0] is False
    # a prompt either side did not score is left out of the pairs
    assert should_stop([0.1, None, 0.2, 0.0, math.nan], _guide(best))[0] is False
    assert should_stop([0.1, None, 0.2, 0.0, math.nan, 0.1], _guide(best))[0] is True
    # minimizing: lower is better, so these are better, never stopped
    assert should_stop(worse, _guide(best, maximize=False))[0] is False
    # the mean guard: most prompts worse, but its mean so far is above the best's mean
    mixed = [0.9, 0.8, 0.9, 0.85, 0.9, 9.0]
    stop, p = should_stop(mixed, _guide(best, p_threshold=0.99))
    assert p < 0.99 and stop is False


def _items(n: int) -> list[PromptItem]:
    return [
        PromptItem(id=f"q{i:02d}", question=f"question {i}", prompt=f"P{i:02d}") for i in range(n)
    ]


def _length_objective() -> Any:
    # length scores len(answer) / 10 below 10 characters: the answers set the per-prompt scores
    return build_objective(
        JudgingConfig.model_validate(
            {
                "judges": {
                    "length": {"type": "length", "options": {"min_chars": 10, "max_chars": 50}}
                }
            }
        )
    )


def test_a_chunked_trial_stops_once_clearly_worse_and_keeps_what_it_used() -> None:
    """A fake generator (canned answers by prompt: this test is about which prompts are
    generated and judged, not about generating) and the real length judge."""
    items = fixed_order(_items(12), seed=3)
    assert [it.id for it in items] != sorted(it.id for it in items)  # shuffled
    assert [it.id for it in fixed_order(_items(12), seed=3)] == [it.id for it in items]
    gen = FakeGenerator(answers={it.prompt: "ab" for it in items})  # each scores 0.2
    with _length_objective() as objective:
        result = generate_and_judge(
            7,
            gen,
            items,
            GenerationParams(),
            objective,
            merge_s=0.0,
            guide=_guide(
                [1.0] * 12,
                chunk_size=3,
                incumbent_value=1.0,
                incumbent_judges={"length": [1.0] * 12},
            ),
        )
    # after 3 prompts: too few pairs; after 6, six worse differences: p = 2^-6
    assert result.pruned and not result.ok and result.values is None
    assert result.prompt_scores == pytest.approx([0.2] * 6)
    assert result.prompt_ids == [it.id for it in items[:6]]
    assert [p for prompts, _ in gen.generate_calls for p in prompts] == [
        it.prompt for it in items[:6]
    ]
    assert result.extra["partial_values"] == pytest.approx([0.2])
    assert result.scores == pytest.approx({"length": 0.2})
    assert result.extra["prompt_judge_scores"] == {"length": pytest.approx([0.2] * 6)}
    assert result.extra["pruned_value"] == pytest.approx(1.0 + (0.2 - 1.0))  # the paired estimate


def test_a_pruned_trial_is_ranked_by_the_paired_per_judge_estimate_below_the_incumbent() -> None:
    weights = {"style": 1.0, "facts": 2.0}
    # the incumbent over 8 prompts; "facts" applies to 4 of them (None elsewhere)
    inc = {
        "style": [0.9, 0.1, 0.8, 0.3, 0.7, 0.2, 0.6, 0.4],
        "facts": [None, 1.0, None, 0.5, None, 0.25, None, 0.75],
    }

    def value(js: dict[str, list[float | None]]) -> float:  # the objective: weighted means
        means = {n: [v for v in vs if v is not None] for n, vs in js.items()}
        return sum(w * sum(means[n]) / len(means[n]) for n, w in weights.items())

    guide = _guide(None, incumbent_value=value(inc), incumbent_judges=inc)
    # a trial worse by a constant per judge on every prompt: the estimate from any prefix
    # is its value over all prompts, whatever the prefix's prompts' difficulty
    worse = {
        "style": [v - 0.3 for v in inc["style"]],  # type: ignore[operator]
        "facts": [None if v is None else v - 0.1 for v in inc["facts"]],
    }
    for k in (3, 4, 6):
        prefix = {n: vs[:k] for n, vs in worse.items()}
        assert pruned_value(prefix, weights, guide) == pytest.approx(value(worse), abs=1e-12)
        # the trial's objective on the prefix alone carries the prefix's difficulty
        assert value(prefix) != pytest.approx(value(worse), abs=0.05)
    # a judge with no prompt of the prefix (facts on prompt 0 only) adds nothing
    only_style = {"style": [0.5], "facts": [None]}
    assert pruned_value(only_style, weights, guide) == pytest.approx(value(inc) - 0.4)
    # better than the incumbent on its prompts: held just below it (the test found it worse)
    better = {"style": [1.0, 1.0], "facts": [None, 1.0]}
    top = pruned_value(better, weights, guide)
    assert top is not None and top < value(inc) and top == pytest.approx(value(inc))
    low = pruned_value({"style": [0.0]}, weights, _guide(None, maximize=False, **_inc(guide)))
    assert low is not None and low > value(inc) and low == pytest.approx(value(inc))
    assert pruned_value(better, weights, _guide(None)) is None  # no incumbent value given


def _inc(guide: PruneGuide) -> dict[str, Any]:
    return {"incumbent_value": guide.incumbent_value, "incumbent_judges": guide.incumbent_judges}


def test_cmaes_ranks_pruned_trials_in_their_generation_by_their_pruned_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A generation of 4: 2 complete, 2 pruned. CMA-ES updates once the 4 are finished (not
    after 4 complete ones) and ranks the pruned trials by the reported value."""
    import cmaes
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState

    told: list[list[float]] = []
    real_tell = cmaes.CMA.tell

    def spy(self: Any, solutions: list[tuple[Any, float]]) -> None:
        told.append([-y for _, y in solutions])  # optuna negates when maximizing
        real_tell(self, solutions)

    monkeypatch.setattr(cmaes.CMA, "tell", spy)
    cfg = SearchConfig(sampler="cmaes", population_size=4, pruning=True)
    study = optuna.create_study(
        direction="maximize", sampler=make_sampler(cfg, n_objectives=1, seed=0)
    )
    dists = {"a": FloatDistribution(0.0, 1.0), "b": FloatDistribution(0.0, 1.0)}
    study.tell(study.ask(dists), [0.0])  # CMA-ES starts once a trial has completed
    first = [study.ask(dists) for _ in range(4)]
    study.tell(first[0], [1.0])
    study.tell(first[1], [0.9])
    for trial, value in zip(first[2:], [0.5, 0.4], strict=True):
        report_pruned(trial, [0.1, 0.2, 0.3, 0.4], value)  # per-prompt scores: not the value
        study.tell(trial, state=TrialState.PRUNED)
    nxt = study.ask(dists)
    assert told and sorted(told[0]) == pytest.approx([0.4, 0.5, 0.9, 1.0])
    generation = "cma:generation"
    system = study._storage.get_trial_system_attrs
    assert [system(t._trial_id)[generation] for t in first] == [0] * 4
    assert system(nxt._trial_id)[generation] == 1
    pruned = study.get_trials(states=(TrialState.PRUNED,))
    assert [(t.intermediate_values, t.value) for t in pruned] == [({4: 0.5}, 0.5), ({4: 0.4}, 0.4)]


def test_a_trial_no_worse_than_the_incumbent_runs_every_prompt_with_the_same_value() -> None:
    items = fixed_order(_items(12), seed=3)
    answers = {it.prompt: "x" * (1 + i % 9) for i, it in enumerate(items)}
    with _length_objective() as objective:
        whole = generate_and_judge(
            1, FakeGenerator(answers=answers), items, GenerationParams(), objective, merge_s=0.0
        )
        chunked = generate_and_judge(
            1,
            FakeGenerator(answers=answers),
            items,
            GenerationParams(),
            objective,
            merge_s=0.0,
            guide=_guide([0.1] * 12, chunk_size=5),
        )
    assert chunked.ok and not chunked.pruned and chunked.prompt_ids is None
    assert chunked.values == pytest.approx(whole.values, rel=1e-12)
    assert chunked.prompt_scores == pytest.approx([(1 + i % 9) / 10 for i in range(12)])


def test_per_sample_scores_count_a_judge_that_does_not_apply_as_zero_and_a_failure_as_nan() -> None:
    cfg = JudgingConfig.model_validate(
        {
            "judges": {
                "length": {"type": "length", "weight": 2.0},
                "facts": {"type": "fact_recall", "weight": 1.0},
            }
        }
    )
    with build_objective(cfg) as objective:
        scores = {
            "length": [Score(0.5), Score(1.0), Score(math.nan, error="boom")],
            "facts": [Score(math.nan), Score(0.25), Score(1.0)],  # the first: not applicable
        }
        per = objective.per_sample(scores)
        assert per[:2] == pytest.approx([1.0, 2.25]) and math.isnan(per[2])
        partial = objective.combine(
            {"length": scores["length"][:1], "facts": scores["facts"][:1]}, partial=True
        )
        assert partial.judge_means == {"length": 0.5} and math.isnan(partial.values[0])


def _pipeline_data(tmp_path: Path, tiny_models: Any, **search: Any) -> dict[str, Any]:
    data = make_run(tiny_models.as_dict(), search=search)
    del data["evaluator"]
    data["generation"] = {"prompts": str(tmp_path / "p.jsonl"), "template": "{question}"}
    data["judging"] = {"judges": {"length": {"type": "length"}}}
    return data


def _refusal(data: dict[str, Any], tmp_path: Path) -> str:
    with pytest.raises((ConfigError, ValueError)) as err:
        RunConfig.model_validate(data, context={"base_dir": tmp_path})
    return str(err.value)


def test_pruning_a_run_cannot_honour_is_refused_naming_the_field(
    tiny_models: Any, tmp_path: Path
) -> None:
    ok = _pipeline_data(tmp_path, tiny_models, pruning=True)
    cfg = RunConfig.model_validate(ok, context={"base_dir": tmp_path})
    assert cfg.search.pruning.enabled and cfg.search.pruning.chunk_size == 4
    assert not RunConfig.model_validate(
        _pipeline_data(tmp_path, tiny_models), context={"base_dir": tmp_path}
    ).search.pruning.enabled  # off by default

    custom = make_run(tiny_models.as_dict(), search={"pruning": {"enabled": True}})
    msg = _refusal(custom, tmp_path)
    assert "search.pruning" in msg and "quadratic_evaluator" in msg

    two = _pipeline_data(tmp_path, tiny_models, pruning=True)
    two["judging"]["objectives"] = [
        {"name": "a", "terms": {"length": 1.0}},
        {"name": "b", "terms": {"length": -1.0}},
    ]
    two["search"]["sampler"] = "tpe"
    assert "search.pruning" in _refusal(two, tmp_path)

    whole = _pipeline_data(tmp_path, tiny_models, pruning=True)
    whole["judging"]["judges"]["ppl"] = {"type": "perplexity"}
    msg = _refusal(whole, tmp_path)
    assert "search.pruning" in msg and "ppl" in msg

    nsga = _pipeline_data(tmp_path, tiny_models, pruning=True, sampler="nsga2")
    msg = _refusal(nsga, tmp_path)
    assert "search.pruning" in msg and "nsga2" in msg

    bad = _pipeline_data(tmp_path, tiny_models, pruning={"enabled": True, "p_threshold": 1.5})
    assert "p_threshold" in _refusal(bad, tmp_path)

    both = _pipeline_data(tmp_path, tiny_models, pruning=True, overlap_judging=True)
    msg = _refusal(both, tmp_path)
    assert "search.pruning" in msg and "search.overlap_judging" in msg
