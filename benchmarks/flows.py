"""Normalizing flows: gradient estimators per flow kind, and auto-flows against NumPyro.

(a) **Standard vs path vs fast path gradient** of the ELBO of a flow family on the banana target
(``vijax.flows.targets``), for every flow kind: the standard reparameterization gradient
(``vj.flow_family(flow)``), the path gradient by an inverse pass (the draw's density re-scored
through ``x → ε`` with stopped parameters, as FlowJAX's stick-the-landing), and the fast path
gradient (``estimator=vj.path()``: the score carried forward, Vaitl et al. 2024). The flow is
first fitted with the standard estimator (``FIT_STEPS`` Adam steps), then at that fixed parameter
each estimator's cost per gradient (a jitted scan of ``TIMED_STEPS`` estimates, timed
round-robin, the parameters an argument of the compiled scan as in training) and the total
variance of those estimates (sum over coordinates) are measured. The path rows carry
``ratio_standard`` = their cost / the standard estimator's cost (median of repeat-by-repeat
ratios; target ≤ 1.3 for the fast path).

**FlowJAX** (a benchmark-only dependency, imported lazily; its columns are skipped with a note
when it is missing) is timed in the same round-robin where it has the same flow: its
``planar_flow`` (tanh), ``coupling_flow`` (affine and rational-quadratic spline transformers),
``masked_autoregressive_flow`` with ``invert=True`` (sampling takes ``d`` passes: MAF) and
``invert=False`` (IAF), each of length ``LENGTH`` with ``HIDDEN`` tanh conditioners, on the same
banana log-density, its gradient that of ``flowjax.train.ElboLoss(num_samples=PARTICLES)``
(``eqx.filter_grad``) at its initial parameters. The standard row carries ``flowjax_s``
(FlowJAX's cost per gradient) and ``ratio_flowjax`` (vijax / FlowJAX); the two path rows carry
the same against ``stick_the_landing=True``, FlowJAX's path gradient (an inverse pass). FlowJAX
has no radial flow, and its tanh planar layer no inverse, hence no stick-the-landing.

(b) **vijax auto-families against NumPyro's autoguides** on the banana and Neal's funnel and on
Bayesian logistic regression (breast cancer, 31 weights): ``vj.auto_flow(kind="iaf")`` vs
``AutoIAFNormal``, ``vj.auto_flow(kind="spline")`` vs ``AutoBNAFNormal`` (different flows, the
nearest pair), ``vj.full_rank_normal`` vs ``AutoMultivariateNormal``; the same Adam optimizer,
``STEPS`` steps of a 1-particle ELBO in one jitted scan each. Rows: time per step (vijax and
NumPyro columns) and the final ELBO (``ELBO_PARTICLES`` particles) of both, with
``elbo_ratio`` = vijax / NumPyro (both negative: below 1 means vijax's is higher).

Like for like: the IAF pair has the same depth (``AUTO_LENGTH`` = 2 IAF layers), the same MADE
widths (``HIDDEN``), one particle per step and the same estimator, the standard
reparameterization gradient (vijax ``estimator=None``; NumPyro ``Trace_ELBO``). What differs:
NumPyro's MADE uses ELU and clips the log-scale, vijax's tanh and a soft clamp; vijax adds an
elementwise affine ``u = μ + σ ⊙ x`` after the flow and a reversal after each IAF layer (NumPyro
between layers). The spline pair is not like for like (NumPyro has no spline autoguide):
``AUTO_LENGTH`` rational-quadratic spline couplings against one block neural autoregressive
flow. The row ``IAF (fast path) vs AutoIAFNormal`` reports vijax's other configuration,
``estimator=vj.path()`` (a different estimator: its IAF step is a ``jacfwd`` sweep and a
triangular solve per layer), against the same NumPyro guide.

Run with ``python -m benchmarks.flows``; writes ``benchmarks/results/flows.{json,md}``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
from numpyro.infer import SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoBNAFNormal, AutoIAFNormal, AutoMultivariateNormal

from benchmarks import harness
from benchmarks import logreg as logreg_benchmark

NAME = "flows"
KINDS = ("planar", "radial", "affine_coupling", "spline", "maf", "iaf")
LENGTH = 4
AUTO_LENGTH = 2
HIDDEN = (32, 32)
PARTICLES = 8
FIT_STEPS = 500
TIMED_STEPS = 200
REPEATS = 9
STEPS = 500
COMPARISON_REPEATS = 3
LEARNING_RATE = 1e-2
ELBO_PARTICLES = 1000


def _flat(tree) -> jax.Array:
    return jnp.concatenate([jnp.ravel(leaf) for leaf in jax.tree.leaves(tree)])


def target_model(name: str):
    """The 2-D target ``name`` as a NumPyro model both libraries run.

    ``z ~ N(0, 10² I)`` and a factor ``log p̃(z) − log N(z; 0, 10² I)``: the posterior is the
    target exactly, and both libraries' prior-based initializations (``init_to_median``) read
    a proper prior the same way.
    """
    from vijax.flows.targets import target

    log_density = target(name).log_density
    prior = dist.Normal(jnp.zeros(2), 10.0).to_event(1)

    def model():
        z = numpyro.sample("z", prior)
        numpyro.factor("log_density", log_density(z) - prior.log_prob(z))

    return model


# --------------------------------------------------------------------------------------------
# (a) gradient estimators per flow kind


def _inverse_pass_family(vj, flow):
    """The path gradient through an inverse pass: a draw without intermediates, re-scored."""

    class InversePassFlow(vj.flows.FlowDistribution):
        def sample_with_intermediates(self, key, sample_shape=()):
            return self.sample(key, sample_shape), []

    def family(params):
        return vj.sample("z", InversePassFlow(flow, params), estimator=vj.path())

    return family


def _fit_flow(vj, model, flow, key):
    family = vj.flow_family(flow)
    value_and_grad = vj.value_and_grad_estimate(vj.elbo(model, family, num_particles=PARTICLES))
    optimizer = optax.adam(LEARNING_RATE)

    def step(carry, _):
        params, state, key = carry
        key, sub = jax.random.split(key)
        _, grads = value_and_grad(params, sub)
        grads = jax.tree.map(jnp.negative, grads)  # ascend the ELBO
        updates, state = optimizer.update(grads, state, params)
        return (optax.apply_updates(params, updates), state, key), None

    @jax.jit
    def run(params, key):
        carry = (params, optimizer.init(params), key)
        return jax.lax.scan(step, carry, None, length=FIT_STEPS)[0][0]

    return run(flow.init(key), jax.random.fold_in(key, 1))


def _flowjax_flow(kind: str):
    """``(flow, note)``: FlowJAX's flow nearest to vijax's ``kind`` (``None`` where it has none)
    and what the rows should say about it."""
    import flowjax.flows
    from flowjax.bijections import RationalQuadraticSpline
    from flowjax.distributions import Normal

    common = {"key": jax.random.key(0), "base_dist": Normal(jnp.zeros(2)), "flow_layers": LENGTH}
    network = {"nn_width": HIDDEN[0], "nn_depth": len(HIDDEN), "nn_activation": jnp.tanh}
    if kind == "planar":
        return flowjax.flows.planar_flow(**common, invert=False), "FlowJAX planar_flow"
    if kind == "affine_coupling":
        return flowjax.flows.coupling_flow(**common, **network, invert=False), (
            "FlowJAX coupling_flow (affine)"
        )
    if kind == "spline":
        spline = RationalQuadraticSpline(knots=8, interval=5.0)
        flow = flowjax.flows.coupling_flow(**common, **network, transformer=spline, invert=False)
        return flow, "FlowJAX coupling_flow (rational-quadratic spline)"
    if kind in ("maf", "iaf"):
        flow = flowjax.flows.masked_autoregressive_flow(**common, **network, invert=kind == "maf")
        return flow, f"FlowJAX masked_autoregressive_flow(invert={kind == 'maf'})"
    return None, f"FlowJAX has no {kind} flow"


def _flowjax_runs(kind: str, errors: list[str]) -> tuple[dict, str]:
    """FlowJAX's gradient scans (standard and stick-the-landing) for ``kind``, and a note."""
    try:
        import equinox as eqx
        import paramax
        from flowjax.train.losses import ElboLoss
    except ImportError as error:
        return {}, f"FlowJAX not installed ({error.name}): its columns are skipped"
    from vijax.flows.targets import target

    flow, note = _flowjax_flow(kind)
    if flow is None:
        return {}, note
    params, static = eqx.partition(
        flow, eqx.is_inexact_array, is_leaf=lambda leaf: isinstance(leaf, paramax.NonTrainable)
    )
    log_density = target("banana").log_density
    runs = {}
    for label, stick_the_landing in (("FlowJAX standard", False), ("FlowJAX STL", True)):
        if stick_the_landing and kind == "planar":
            note += "; its tanh planar layer has no inverse, so no stick-the-landing"
            continue
        loss = ElboLoss(log_density, PARTICLES, stick_the_landing=stick_the_landing)

        @jax.jit
        def scan(params, key, loss=loss):
            def body(carry, k):
                return carry, _flat(eqx.filter_grad(loss)(params, static, k))

            return jax.lax.scan(body, None, jax.random.split(key, TIMED_STEPS))[1]

        runs[label] = lambda scan=scan: scan(params, jax.random.key(3))
        if harness.attempt(f"{kind} {label}", runs[label], errors) is None:
            runs[label] = None
    return runs, note


def estimator_rows(vj) -> list[harness.Row]:
    """Variance and cost per gradient of the three estimators, per flow kind (banana)."""
    rows = []
    model = target_model("banana")
    printed = set()
    for kind in KINDS:
        errors: list[str] = []
        flow = vj.flows.make_flow(kind, 2, LENGTH, hidden=HIDDEN)
        params = harness.attempt(
            f"{kind} fit", lambda flow=flow: _fit_flow(vj, model, flow, jax.random.key(0)), errors
        )
        if params is None:
            rows.append(harness.make_row(f"banana {kind}", {}, notes="; ".join(errors)))
            continue
        families = {
            "standard": vj.flow_family(flow),
            "path (inverse pass)": _inverse_pass_family(vj, flow),
            "fast path": vj.flow_family(flow, estimator=vj.path()),
        }
        runs = {}
        for label, family in families.items():
            estimator = vj.gradient_estimator(vj.elbo(model, family, num_particles=PARTICLES))

            @jax.jit
            def scan(params, key, estimator=estimator):
                def body(carry, k):
                    return carry, _flat(estimator.estimate(params, None, k)[1])

                return jax.lax.scan(body, None, jax.random.split(key, TIMED_STEPS))[1]

            runs[label] = lambda scan=scan, params=params: scan(params, jax.random.key(3))
            if harness.attempt(f"{kind} {label}", runs[label], errors) is None:
                runs[label] = None
        peer_runs, peer_note = _flowjax_runs(kind, errors)
        if peer_note.startswith("FlowJAX not installed") and peer_note not in printed:
            printed.add(peer_note)
            print(f"flows: {peer_note}")
        times, outputs = harness.time_scans({**runs, **peer_runs}, REPEATS)
        variances = {}
        for label in families:
            draws = outputs.get(label)
            if draws is not None and not bool(jnp.all(jnp.isfinite(draws))):
                errors.append(f"{kind} {label}: non-finite gradients")
            if draws is not None:
                variances[label] = float(np.sum(np.var(np.asarray(draws, np.float64), axis=0)))
        for label in families:
            if times.get(label) is None:
                continue
            extra = {"variance": variances.get(label)}
            if label != "standard" and times.get("standard"):
                extra["ratio_standard"] = harness.paired_ratio(times[label], times["standard"])
                extra["variance_ratio_standard"] = variances[label] / variances["standard"]
            peer = times.get("FlowJAX standard" if label == "standard" else "FlowJAX STL")
            if peer:
                extra["flowjax_s"] = harness.median(peer) / TIMED_STEPS
                extra["ratio_flowjax"] = harness.paired_ratio(times[label], peer)
            rows.append(
                harness.make_row(
                    f"banana {kind} L={LENGTH}: {label}",
                    {"vijax": times[label]},
                    per=TIMED_STEPS,
                    metric=f"cost per {PARTICLES}-particle gradient; total gradient variance",
                    unit="s/step",
                    notes="; ".join([*errors, peer_note]),
                    **extra,
                )
            )
        if errors and not any(r.case.startswith(f"banana {kind} ") for r in rows):
            rows.append(harness.make_row(f"banana {kind}", {}, notes="; ".join(errors)))
    return rows


# --------------------------------------------------------------------------------------------
# (b) against NumPyro's autoguides


def _vijax_run(vj, model, family, data):
    objective = vj.elbo(model, family, num_particles=1)
    value_and_grad = vj.value_and_grad_estimate(objective)
    optimizer = optax.adam(LEARNING_RATE)

    def step(carry, _):
        params, state, key = carry
        key, sub = jax.random.split(key)
        value, grads = value_and_grad(params, sub, *data)
        grads = jax.tree.map(jnp.negative, grads)
        updates, state = optimizer.update(grads, state, params)
        return (optax.apply_updates(params, updates), state, key), value

    @jax.jit
    def run(params, key):
        carry = (params, optimizer.init(params), key)
        return jax.lax.scan(step, carry, None, length=STEPS)[0][0]

    params0 = family.init(jax.random.key(0), *data)
    objective = vj.elbo(model, family, num_particles=ELBO_PARTICLES)
    final = jax.jit(lambda params, key, *data: objective(params, key, *data).value)
    return (lambda: run(params0, jax.random.key(1))), (
        lambda params: float(final(params, jax.random.key(9), *data))
    )


def _numpyro_run(model, guide, data):
    svi = SVI(model, guide, optax.adam(LEARNING_RATE), Trace_ELBO())
    state0 = svi.init(jax.random.key(0), *data)

    @jax.jit
    def run(state):
        return jax.lax.scan(lambda s, _: svi.update(s, *data), state, None, length=STEPS)[0]

    loss = Trace_ELBO(num_particles=ELBO_PARTICLES)
    negative_elbo = jax.jit(
        lambda params, *data: loss.loss(jax.random.key(9), params, model, guide, *data)
    )

    def final(state):
        return -float(negative_elbo(svi.get_params(state), *data))

    return (lambda: run(state0)), final


def comparison_rows(vj) -> list[harness.Row]:
    """Time per step and final ELBO, vijax auto-families vs NumPyro autoguides."""
    features, labels = logreg_benchmark.load_data()
    targets = {
        "banana": (target_model("banana"), ()),
        "funnel": (target_model("funnel"), ()),
        "logreg (breast cancer)": (logreg_benchmark.model, (features, labels)),
    }
    pairs = {
        "IAF vs AutoIAFNormal": (
            lambda m: vj.auto_flow(
                m, kind="iaf", length=AUTO_LENGTH, hidden=HIDDEN, init_loc="zeros"
            ),
            lambda m: AutoIAFNormal(m, num_flows=AUTO_LENGTH, hidden_dims=list(HIDDEN)),
        ),
        "IAF (fast path) vs AutoIAFNormal": (
            lambda m: vj.auto_flow(
                m,
                kind="iaf",
                length=AUTO_LENGTH,
                hidden=HIDDEN,
                init_loc="zeros",
                estimator=vj.path(),
            ),
            lambda m: AutoIAFNormal(m, num_flows=AUTO_LENGTH, hidden_dims=list(HIDDEN)),
        ),
        "spline vs AutoBNAFNormal": (
            lambda m: vj.auto_flow(
                m, kind="spline", length=AUTO_LENGTH, hidden=HIDDEN, init_loc="zeros"
            ),
            lambda m: AutoBNAFNormal(m, num_flows=1, hidden_factors=[8, 8]),
        ),
        "full rank vs AutoMultivariateNormal": (
            lambda m: vj.full_rank_normal(m, init_loc="zeros"),
            lambda m: AutoMultivariateNormal(m),
        ),
    }
    rows = []
    for target_name, (model, data) in targets.items():
        for pair_name, (make_family, make_guide) in pairs.items():
            errors: list[str] = []
            made = harness.attempt(
                "vijax",
                lambda m=model, f=make_family, d=data: _vijax_run(vj, m, f(m), d),
                errors,
            )
            theirs = harness.attempt(
                "numpyro",
                lambda m=model, g=make_guide, d=data: _numpyro_run(m, g(m), d),
                errors,
            )
            runs = {
                "vijax": made[0] if made else None,
                "numpyro": theirs[0] if theirs else None,
            }
            times, outputs = harness.time_scans(runs, COMPARISON_REPEATS)
            elbo_vijax = made[1](outputs["vijax"]) if made else None
            elbo_numpyro = theirs[1](outputs["numpyro"]) if theirs else None
            ratio = (
                elbo_vijax / elbo_numpyro
                if elbo_vijax is not None and elbo_numpyro not in (None, 0.0)
                else None
            )
            rows.append(
                harness.make_row(
                    f"{target_name}: {pair_name}",
                    times,
                    per=STEPS,
                    metric=f"time per step ({STEPS} steps, 1 particle); final ELBO",
                    unit="s/step",
                    notes="; ".join(errors),
                    elbo_vijax=elbo_vijax,
                    elbo_numpyro=elbo_numpyro,
                    elbo_ratio=ratio,
                )
            )
    return rows


def run() -> list[harness.Row]:
    """All rows: (a) estimators per flow kind, (b) against NumPyro."""
    harness.warm_up_jax()
    vj, reason = harness.import_vijax()
    if vj is None:
        return [harness.make_row("flows", {}, notes=reason)]
    return estimator_rows(vj) + comparison_rows(vj)


if __name__ == "__main__":
    print(harness.write_results(NAME, run()))
