"""Python API argument checks. One rule
(docs/language.md, "Python API"): an argument of the wrong Python type (the source text,
the data dict or its keys, the infer spec, a path, log_density's values) is a TypeError
naming the argument and the type expected; a value of the right type that is wrong (an
option, a number of draws, a dtype, data that do not fit the model) is a ppl.BdlError.
Also: an option given in ``infer=`` and as a keyword with different values is refused;
sample_prior(num_samples=0) is not 1000 draws; fit.save's messages speak of its path, not
of CLI flags; new data of another size in fit.predict and a wrong-shaped log_density value
are said in the language's terms."""

import pytest
import torch

import ppl

MU = """model Mu(y: real[N]) {
  mu ~ Normal(0, 1)
  theta: real[N] ~ Normal(mu, 1)
  y ~ Normal(theta, 1)
}
infer map(steps=5)
"""
DATA = {"y": [0.5, 1.5, -0.5]}


@pytest.fixture(scope="module")
def model():
    return ppl.compile(MU, "mu.bdl")


@pytest.fixture(scope="module")
def fitted(model):
    return model.fit(DATA, "nuts(samples=4, warmup=4, chains=1)")


@pytest.mark.parametrize("call, said", [
    (lambda: ppl.compile(123), "ppl.compile: text must be a str (the BDL source), not int"),
    (lambda: ppl.compile(None), "ppl.compile: text must be a str (the BDL source), not NoneType"),
    (lambda: ppl.compile(b"model M() {}"), "ppl.compile: text must be a str (the BDL source), "
                                           "not bytes"),
    (lambda: ppl.compile(MU, model=3), "ppl.compile: model must be a model name (str) or None, "
                                       "not int"),
    (lambda: ppl.load(5), "ppl.load: path must be a str or a Path, not int"),
])
def test_compile_and_load_name_the_argument_of_the_wrong_type(call, said):
    with pytest.raises(TypeError) as e:
        call()
    assert str(e.value) == said


def test_fit_names_the_argument_of_the_wrong_type(model):
    for data, said in [([1, 2], "fit: data must be a dict of name: value, not list"),
                       ({5: 1, "y": [1.0]}, "fit: data keys must be str (the model's argument "
                                            "names), not int (5)")]:
        with pytest.raises(TypeError) as e:
            model.fit(data)
        assert str(e.value) == said
    for infer in ({"method": "nuts"}, 3):
        with pytest.raises(TypeError, match=r"^fit: infer must be a str such as "
                                            r"'svi\(steps=500\)', or None, not "):
            model.fit(DATA, infer)


def test_an_option_in_infer_and_as_a_keyword_must_agree(model):
    with pytest.raises(ppl.BdlError) as e:
        model.fit(DATA, infer="nuts(samples=5)", samples=7)  # was 7 draws, silently
    assert str(e.value).splitlines()[0] == ("--infer:1:12: error: option 'samples' is 5 here "
                                            "but samples= gives 7: give it once, or the same "
                                            "value in both")
    assert model.resolve_infer("nuts(samples=5)", samples=5)[1]["samples"] == 5


@pytest.mark.parametrize("kwargs, said", [
    ({"num_samples": 0}, "num_samples=0: expected a positive integer"),
    ({"num_samples": -1}, "num_samples=-1: expected a positive integer"),
    ({"num_samples": "a"}, "num_samples='a': expected a positive integer"),
    ({"num_samples": True}, "num_samples=True: expected a positive integer"),
    ({"dtype": "float16"}, "dtype='float16': expected one of float32, float64 (as fit takes it)"),
    ({"dtype": "int64"}, "dtype='int64': expected one of float32, float64 (as fit takes it)"),
    ({"device": "gpu"}, "device='gpu': expected one of cpu, cuda"),
])
def test_sample_prior_checks_its_arguments(model, kwargs, said):
    with pytest.raises(ppl.BdlError) as e:
        model.sample_prior(DATA, **kwargs)
    assert str(e.value) == f"sample_prior: error: {said}"


def test_sample_prior_gives_the_draws_asked_for(model):
    draws = model.sample_prior(DATA, num_samples=3, seed=1)
    assert draws["mu"].shape == (3,) and draws["theta"].shape == (3, 3)
    assert model.sample_prior(DATA, num_samples=1, dtype="float32")["mu"].dtype == torch.float32


def test_log_density_values_of_the_wrong_type_or_shape(model):
    with pytest.raises(TypeError, match="^log_density: trace_values must be a dict of latent "
                                        "name: value, not list$"):
        model.log_density([0.0], DATA)
    with pytest.raises(ppl.BdlError) as e:
        model.log_density({"mu": "a", "theta": [0.0, 0.0, 0.0]}, DATA)
    assert str(e.value) == ("mu.bdl: error: log_density: 'mu' is 'a': expected a number, a "
                            "tensor or a nested list of numbers")
    with pytest.raises(ppl.BdlError) as e:
        model.log_density({"mu": 0.0, "theta": [0.0, 0.0]}, DATA)
    assert str(e.value) == ("mu.bdl: error: log_density: 'theta' is [2] but the latent is [3] "
                            "with these data")
    # the right values: the density by hand (N(0, 1) for mu, three for theta given mu and
    # three for y given theta), in torch's default float32
    import math

    lp = model.log_density({"mu": 0.0, "theta": [0.0, 0.0, 0.0]}, DATA)
    normal = -0.5 * math.log(2 * math.pi)
    assert lp == pytest.approx(7 * normal - 0.5 * (0.25 + 2.25 + 0.25), rel=1e-6)


def test_fit_predict_with_another_size_says_which_latent(fitted):
    with pytest.raises(ppl.BdlError) as e:
        fitted.predict({"y": [0.5, 1.5]})
    assert str(e.value).splitlines()[0] == (
        "predict: error: fit.predict: the new data do not fit the posterior draws: latent "
        "'theta' was saved as [3] per draw; with these data it is [2]")
    # data of the fitted size still predict: y left out is drawn, one per posterior draw
    assert fitted.predict({"y": None, "N": 3}, seed=0)["y"].shape == (4, 3)


def test_fit_save_speaks_of_its_path_not_of_flags(fitted, tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(FileExistsError) as e:
        fitted.save(tmp_path / "f")
    assert str(e.value) == f"{tmp_path / 'f'} is a file; fit.save's path names a folder"
    with pytest.raises(OSError) as e:
        fitted.save("/proc/bdl-cx27/run")
    assert str(e.value).startswith("fit.save's path /proc/bdl-cx27/run cannot be written (")
    assert "--" not in str(e.value) and not (tmp_path / "run").exists()
    with pytest.raises(TypeError, match="^fit.save: path must be a str or a Path, not int$"):
        fitted.save(3)
    fitted.save(tmp_path / "run")
    assert (tmp_path / "run" / "run.json").exists()


def test_predict_run_says_when_it_has_fewer_draws_than_asked(model, fitted, tmp_path):
    fitted.save(tmp_path / "r")
    with pytest.warns(UserWarning, match=r"draws=50: the run in .* saved 4 posterior draws; "
                                         r"all 4 are used"):
        pred = model.predict_run(tmp_path / "r", {"y": None, "N": 3}, seed=0, draws=50)
    assert pred["y"].shape == (4, 3)
