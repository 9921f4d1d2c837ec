"""Every keras-tuner internal pipeline/search relies on, pinned: a new keras-tuner that changes
one fails here, naming what to review, instead of breaking a search at run time.

Two kinds of pin: the source of code we copy or replace (its hash), and the private names we
call or read (their presence and signature).
"""

import hashlib
import inspect

import keras_tuner as kt
import pytest
from keras_tuner.src import utils as kt_utils
from keras_tuner.src.distribute import oracle_chief, oracle_client
from keras_tuner.src.engine import base_tuner, oracle as kt_oracle, stateful

from pipeline.search import oracle as edge_oracle, space

#: (keras-tuner function, sha256[:16] of its source in keras-tuner 1.4.8, what we do with it)
SOURCES = [
    (base_tuner.BaseTuner.search, "39c5cecee4c44974",
     "EdgeTuner.search (pipeline/search/tuner.py) copies its loop without the chief branch"),
    (kt.oracles.BayesianOptimizationOracle.populate_space, "bf426ef270d32ccb",
     "FewerRestartsBayesian.populate_space (pipeline/search/oracle.py) copies it"),
    (oracle_chief.OracleServicer.UpdateTrial, "8a3a4006a7a2acbc",
     "_Servicer.UpdateTrial (pipeline/search/distribute.py) replaces it"),
    (oracle_chief.OracleServicer.EndTrial, "30cf6911d7d80c7d",
     "_Servicer.EndTrial (pipeline/search/distribute.py) replaces it"),
    (oracle_client.OracleClient.__init__, "6b6b048cbccab34c",
     "RemoteOracle.__init__ (pipeline/search/distribute.py) sets the same attributes"),
    (kt_oracle.synchronized, "639ddefe40f6acac",
     "_unlocking (pipeline/search/distribute.py) frees THREADS/LOCKS the way it takes them"),
    (kt_oracle.Oracle.reload, "dc44a16a76415806",
     "EdgeOracleMixin.reload (pipeline/search/oracle.py) repairs what it leaves"),
    (stateful.Stateful.save, "8af01aaf7a25efa4",
     "oracle.json is written through utils.save_json, which pipeline/search/oracle.py makes atomic"),
]


@pytest.mark.parametrize("func,digest,why", SOURCES, ids=[s[0].__qualname__ for s in SOURCES])
def test_copied_or_replaced_keras_tuner_code_is_unchanged(func, digest, why):
    got = hashlib.sha256(inspect.getsource(func).encode()).hexdigest()[:16]
    assert got == digest, (f"keras-tuner {kt.__version__} changed {func.__module__}."
                           f"{func.__qualname__}: review {why}; then update the digest here")


#: (owner, private method, its parameters) we call or override
METHODS = [
    (base_tuner.BaseTuner, "_try_run_and_update_trial", ["self", "trial", "fit_args", "fit_kwargs"]),
    (kt_oracle.Oracle, "_check_consecutive_failures", ["self"]),
    (kt_oracle.Oracle, "_set_project_dir", ["self", "directory", "project_name"]),
    (kt.oracles.BayesianOptimizationOracle, "_random_populate_space", ["self"]),
    (kt.oracles.BayesianOptimizationOracle, "_vectorize_trials", ["self"]),
    (kt.oracles.BayesianOptimizationOracle, "_get_hp_bounds", ["self"]),
    (kt.oracles.BayesianOptimizationOracle, "_vector_to_values", ["self", "vector"]),
]


@pytest.mark.parametrize("owner,name,params", METHODS, ids=[m[1] for m in METHODS])
def test_private_methods_we_call_keep_their_signature(owner, name, params):
    assert hasattr(owner, name), f"keras-tuner {kt.__version__}: {owner.__name__}.{name} is gone"
    assert list(inspect.signature(getattr(owner, name)).parameters) == params


@pytest.mark.parametrize("name", ["random", "bayesian", "hyperband"])
def test_oracle_state_we_read_is_there(name):
    hp = space.hyperparameters({"width": [0.25, 0.5]}, "k")
    o = edge_oracle.make_oracle(name, hp, max_trials=2, seed=0, epochs=2)
    assert isinstance(o._retry_queue, list) and isinstance(o.end_order, list)
    assert isinstance(o.ongoing_trials, dict) and isinstance(o.tuner_ids, set)
    assert isinstance(o.trials, dict)
    if name == "bayesian":
        assert all(hasattr(o, a) for a in ("_random_state", "gpr", "beta", "num_initial_points"))
    assert kt_oracle.THREADS[o] is None and kt_oracle.LOCKS[o].acquire(blocking=False)
    kt_oracle.LOCKS[o].release()


def test_every_json_keras_tuner_writes_goes_through_our_atomic_save():
    """oracle.json, trial_*/trial.json and tuner*.json: Stateful.save (hash-pinned above) calls
    utils.save_json, and none of them writes its own way."""
    from keras_tuner.src.engine import trial as kt_trial

    assert kt_utils.save_json is edge_oracle._atomic_json
    for cls in (kt_oracle.Oracle, kt_trial.Trial, base_tuner.BaseTuner):
        assert issubclass(cls, stateful.Stateful)
        own = cls.__dict__.get("save")
        assert own is None or "super().save(" in inspect.getsource(own), cls.__qualname__
    assert callable(oracle_chief.exit_chief)
