"""Golden diagnostics: malformed programs and bad data, each with its exact rendered error.

Every case is the full text a user sees: ``FILE:LINE:COL: error: MESSAGE``, the source
line indented by two spaces, a caret line, then any notes. They are compared with ``==``,
so a change to any message, location or note shows up here and must be deliberate.
"""
# ruff: noqa: E501  (golden text keeps the long lines the user sees)

import warnings

import pytest

import ppl
from ppl.pipeline import front

FRONT_CASES = [
    pytest.param(
        """\
model M(y: real[N]) {
  mu ~ Normal(0, 1
  y ~ Normal(mu, 1)
}
""",
        """\
model.bdl:3:3: error: unexpected name 'y'; expected ')' or ','
    y ~ Normal(mu, 1)
    ^
  note: the '(' opened at 2:14 is not closed""",
        id="syntax_missing_paren",
    ),
    pytest.param(
        """\
model M(y: real[N]) {
  mu ~ Normal(0,
              [1, 2
  y ~ Normal(mu, 1)
}
""",
        """\
model.bdl:4:3: error: unexpected name 'y'; expected ',' or ']'
    y ~ Normal(mu, 1)
    ^
  note: the '[' opened at 3:15 is not closed""",
        id="syntax_unclosed_bracket_in_wrapped_call",
    ),
    pytest.param(
        """\
model M(y: real[N]) {
  mu ~ Normal(0, 1) )
  y ~ Normal(mu, 1)
}
""",
        """\
model.bdl:2:21: error: unexpected ')'; expected ';', '}' or end of line
    mu ~ Normal(0, 1) )
                      ^""",
        id="syntax_stray_token",
    ),
    pytest.param(
        """\
model M(y: real[N]) {
  mu ~ Normal(0, 1) $
  y ~ Normal(mu, 1)
}
""",
        """\
model.bdl:2:21: error: unexpected character '$'
    mu ~ Normal(0, 1) $
                      ^""",
        id="syntax_junk_character",
    ),
    pytest.param(
        """\
model M(y: real[N]) {
  mu ~ Normal(0, 1) é
  y ~ Normal(mu, 1)\x07
}
""",
        """\
model.bdl:2:21: error: unexpected character 'é'
    mu ~ Normal(0, 1) é
                      ^
model.bdl:3:20: error: unexpected invisible character U+0007
    y ~ Normal(mu, 1)?
                     ^""",
        id="syntax_non_ascii_and_control_characters",
    ),
    pytest.param(
        """\
model M(y: real[N]) {
  mu ~ Normal(0, 1)
  y ~ Normal(mu, 1)

""",
        """\
model.bdl:3:20: error: unexpected end of file: missing '}'
    y ~ Normal(mu, 1)
                     ^
  note: the '{' opened at 1:21 is not closed""",
        id="syntax_missing_brace_at_eof",
    ),
    pytest.param(
        """\
model M(y: real[N]) {
  y ~ Normal(0,
""",
        """\
model.bdl:2:16: error: unexpected end of file: missing ')'
    y ~ Normal(0,
                 ^
  note: the '(' opened at 2:13 is not closed""",
        id="syntax_missing_paren_at_eof",
    ),
    pytest.param(
        """\
model M(y: real[N]) {
  mu ~ Normal(0, 1) 3
  sigma ~ HalfNormal(1) +
  tau = [1, 2
  y ~ Normal(mu, sigma) ]
}
infer nuts(samples=10
""",
        """\
model.bdl:2:21: error: unexpected number 3; expected ';', '}' or end of line
    mu ~ Normal(0, 1) 3
                      ^
model.bdl:3:26: error: unexpected end of line; expected an expression
    sigma ~ HalfNormal(1) +
                           ^
model.bdl:5:3: error: unexpected name 'y'; expected ',' or ']'
    y ~ Normal(mu, sigma) ]
    ^
  note: the '[' opened at 4:9 is not closed
model.bdl:7:22: error: unexpected end of file: missing ')'
  infer nuts(samples=10
                       ^
  note: the '(' opened at 7:11 is not closed""",
        id="syntax_several_independent_errors",
    ),
    pytest.param(
        """\
model M(y: real[N] {
  mu ~ Normal(0, 1)
  y ~ Normal(mu, 1) $
}
""",
        """\
model.bdl:1:20: error: unexpected '{'; expected ')', ',' or '?'
  model M(y: real[N] {
                     ^
model.bdl:3:21: error: unexpected character '$'
    y ~ Normal(mu, 1) $
                      ^""",
        id="syntax_broken_header_recovers_body",
    ),
    pytest.param(
        """\
model M(y: real[N]) {
  mu ~ Normal(0, 1)
  plate i in N batch {
    y ~ Normal(mu, 1)
  }
}
""",
        """\
model.bdl:3:22: error: unexpected '{'; expected an expression
    plate i in N batch {
                       ^""",
        id="syntax_broken_plate_header",
    ),
    pytest.param(
        """\
model M(y: real[N] {
  y ~ Normal(0, 1)
""",
        """\
model.bdl:1:20: error: unexpected '{'; expected ')', ',' or '?'
  model M(y: real[N] {
                     ^
model.bdl:2:19: error: unexpected end of file: missing '}'
    y ~ Normal(0, 1)
                    ^
  note: the '{' opened at 1:20 is not closed""",
        id="syntax_broken_header_and_missing_brace",
    ),
    pytest.param(
        """\
model M(y: real[N]) {
  y ~ Normal(0, 1)
}}
""",
        """\
model.bdl:3:2: error: unexpected '}': no '{' is open here
  }}
   ^""",
        id="syntax_stray_closing_brace",
    ),
    pytest.param(
        """\
model M(y: real[N]) {
  y ~ Normal(0, "abc)
}
""",
        """\
model.bdl:2:17: error: unterminated string (a string must end with '"' on the same line)
    y ~ Normal(0, "abc)
                  ^""",
        id="syntax_unterminated_string",
    ),
    pytest.param(
        """\
model M(y: real[N]) {
  mu + 1 ~ Normal(0, 1)
  y ~ Normal(mu, 1)
}
""",
        """\
model.bdl:2:6: error: unexpected '+'; expected ':', '=' or '~'
    mu + 1 ~ Normal(0, 1)
       ^""",
        id="syntax_expression_on_the_left",
    ),
    pytest.param(
        """\
model M(y: real[N]) {
  sigma ~ HalfNormal(1)
  y ~ Normal(0, sgima)
}
""",
        """\
model.bdl:3:17: error: 'sgima' is not defined
    y ~ Normal(0, sgima)
                  ^~~~~
  note: did you mean 'sigma'?""",
        id="name_undefined_did_you_mean",
    ),
    pytest.param(
        """\
model M(y: real[N]) {
  y ~ Normal(0, zzz)
}
""",
        """\
model.bdl:2:17: error: 'zzz' is not defined
    y ~ Normal(0, zzz)
                  ^~~""",
        id="name_undefined_no_suggestion",
    ),
    pytest.param(
        """\
model M(y: real[N]) {
  y ~ Normal(mu, 1)
  mu ~ Normal(0, 1)
}
""",
        """\
model.bdl:2:14: error: 'mu' is used before it is defined
    y ~ Normal(mu, 1)
               ^~
  note: it is defined at 3:3""",
        id="name_used_before_definition",
    ),
    pytest.param(
        """\
model M(y: real[N]) {
  mu ~ Normal(0, 1)
  mu = 2
  y ~ Normal(mu, 1)
}
""",
        """\
model.bdl:3:3: error: 'mu' is already defined
    mu = 2
    ^~
  note: first defined at 2:3""",
        id="name_redefinition",
    ),
    pytest.param(
        """\
model M(y: real[N]) {
  N = 3
  y ~ Normal(0, 1)
}
""",
        """\
model.bdl:2:3: error: 'N' is already defined
    N = 3
    ^
  note: 'N' is a size, named in the shape of 'y' at 1:9""",
        id="name_redefines_a_size",
    ),
    pytest.param(
        """\
model M(y: real[N], y: real[N]) {
  y ~ Normal(0, 1)
}
""",
        """\
model.bdl:1:21: error: argument 'y' is declared twice
  model M(y: real[N], y: real[N]) {
                      ^
  note: first declared at 1:9""",
        id="name_duplicate_argument",
    ),
    pytest.param(
        """\
model M(y: real[N]) {
  y ~ Normal(0, 1)
  y ~ Normal(1, 1)
}
""",
        """\
model.bdl:3:3: error: 'y' is observed twice
    y ~ Normal(1, 1)
    ^
  note: first observed at 2:3""",
        id="name_observed_twice",
    ),
    pytest.param(
        """\
model M(y: real[N]) {
  mu ~ Normall(0, 1)
  y ~ Normal(mu, 1)
}
""",
        """\
model.bdl:2:8: error: unknown distribution 'Normall'
    mu ~ Normall(0, 1)
         ^~~~~~~
  note: did you mean 'Normal'?""",
        id="dist_unknown_name",
    ),
    pytest.param(
        """\
model M(y: real[N]) {
  y ~ normal(0, 1)
}
""",
        """\
model.bdl:2:7: error: unknown function 'normal'
    y ~ normal(0, 1)
        ^~~~~~
  note: did you mean 'Normal'?""",
        id="dist_lower_case_name",
    ),
    pytest.param(
        """\
model M(y: real[N]) {
  y ~ Normal(0, 1, 2)
}
""",
        """\
model.bdl:2:20: error: Normal takes at most 2 positional arguments (loc, scale), got 3
    y ~ Normal(0, 1, 2)
                     ^""",
        id="dist_too_many_positional",
    ),
    pytest.param(
        """\
model M(y: real[N]) {
  y ~ Normal(0, scal=1)
}
""",
        """\
model.bdl:2:17: error: Normal has no argument 'scal'
    y ~ Normal(0, scal=1)
                  ^~~~
  note: did you mean 'scale'?""",
        id="dist_unknown_keyword",
    ),
    pytest.param(
        """\
model M(y: real[N]) {
  y ~ Normal(0)
}
""",
        """\
model.bdl:2:7: error: Normal needs argument scale
    y ~ Normal(0)
        ^~~~~~~~~
  note: Normal(loc, scale)""",
        id="dist_missing_required",
    ),
    pytest.param(
        """\
model M(y: int[N]) {
  z ~ Categorical(probs=[0.5, 0.5], logits=[0.0, 0.0])
  y ~ Categorical()
}
""",
        """\
model.bdl:2:7: error: Categorical needs exactly one of probs, logits; got probs and logits
    z ~ Categorical(probs=[0.5, 0.5], logits=[0.0, 0.0])
        ^~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
model.bdl:3:7: error: Categorical needs exactly one of probs, logits; got neither
    y ~ Categorical()
        ^~~~~~~~~~~~~""",
        id="dist_categorical_both_and_neither",
    ),
    pytest.param(
        """\
model M(y: real[N]) {
  y ~ Normal(0, 1, scale=2)
}
""",
        """\
model.bdl:2:20: error: argument 'scale' of Normal given twice
    y ~ Normal(0, 1, scale=2)
                     ^~~~~""",
        id="dist_keyword_given_twice",
    ),
    pytest.param(
        """\
model M(y: real[N]) {
  y ~ exp(1)
}
""",
        """\
model.bdl:2:7: error: the right of '~' must be a distribution, not a real value
    y ~ exp(1)
        ^~~~~~
  note: distributions are capitalised: Normal(0, 1)""",
        id="dist_not_a_distribution",
    ),
    pytest.param(
        """\
model M(y: real[N]) {
  a: real[3] ~ Normal(0, 1)
  b: real[4] ~ Normal(0, 1)
  c = a + b
  y ~ Normal(0, 1)
}
""",
        """\
model.bdl:4:7: error: size mismatch between the operands of '+' [3] and [4]: 3 vs 4
    c = a + b
        ^~~~~""",
        id="shape_broadcast_provably_wrong",
    ),
    pytest.param(
        """\
model M(x: real[N, 3], y: real[N]) {
  w: real[4] ~ Normal(0, 1)
  y ~ Normal(x @ w, 1)
}
""",
        """\
model.bdl:3:14: error: size mismatch between the operands of '@' [N, 3] and [4]: 3 vs 4
    y ~ Normal(x @ w, 1)
               ^~~~~""",
        id="shape_matmul_inner_sizes",
    ),
    pytest.param(
        """\
model M(y: real[N]) {
  mu: real[3] ~ Normal([0, 0], 1)
  nu: real[3] ~ Normal(zeros(2, 3), 1)
  y ~ Normal(0, 1)
}
""",
        """\
model.bdl:2:17: error: size mismatch between the distribution [2] and 'mu' [3]: 2 vs 3
    mu: real[3] ~ Normal([0, 0], 1)
                  ^~~~~~~~~~~~~~~~~
model.bdl:3:17: error: the distribution has shape [2, 3], which does not fit 'nu' of shape [3]
    nu: real[3] ~ Normal(zeros(2, 3), 1)
                  ^~~~~~~~~~~~~~~~~~~~~~""",
        id="shape_declared_shape_does_not_fit_distribution",
    ),
    pytest.param(
        """\
model M(y: reel[N]) {
  y ~ Normal(0, 1)
}
""",
        """\
model.bdl:1:12: error: unknown type 'reel'
  model M(y: reel[N]) {
             ^~~~~~~
  note: did you mean 'real'?""",
        id="shape_unknown_type",
    ),
    pytest.param(
        """\
model M(y: real[N]) {
  mu: real[3] ~ Normal(0, 1)
  y ~ Normal(mu[0, 1], 1)
}
""",
        """\
model.bdl:3:14: error: too many indices: the value has 1 dimension [3]
    y ~ Normal(mu[0, 1], 1)
               ^~~~~~~~""",
        id="shape_too_many_indices",
    ),
    pytest.param(
        """\
model M(y: real[N]) {
  z: real[K] ~ Normal(0, 1)
  y ~ Normal(0, 1)
}
""",
        """\
model.bdl:2:11: error: unknown size 'K'
    z: real[K] ~ Normal(0, 1)
            ^
  note: sizes are bound by the shapes of the model's data arguments
  note: a size that no data shape names is an argument of its own: K: int""",
        id="shape_unknown_size",
    ),
    pytest.param(
        """\
model M(y: real[N]) {
  z: real[2 - 3] ~ Normal(0, 1)
  w: real[N / 0] ~ Normal(0, 1)
  y ~ Normal(0, 1)
}
""",
        """\
model.bdl:2:11: error: a dimension must be a whole number of at least 0, but this one is -1
    z: real[2 - 3] ~ Normal(0, 1)
            ^~~~~
model.bdl:3:11: error: division by zero in a dimension
    w: real[N / 0] ~ Normal(0, 1)
            ^~~~~""",
        id="shape_negative_dimension",
    ),
    pytest.param(
        """\
model M(y: real[N]) {
  y ~ Normal(0, 1)
}
infer nutz(samples=10)
""",
        """\
model.bdl:4:7: error: unknown inference method 'nutz'
  infer nutz(samples=10)
        ^~~~
  note: did you mean 'nuts'?""",
        id="infer_unknown_method",
    ),
    pytest.param(
        """\
model M(y: real[N]) {
  y ~ Normal(0, 1)
}
infer nuts(sample=10)
""",
        """\
model.bdl:4:12: error: unknown option 'sample' for nuts
  infer nuts(sample=10)
             ^~~~~~~~~
  note: did you mean 'samples'?""",
        id="infer_unknown_option",
    ),
    pytest.param(
        """\
model M(y: real[N]) {
  y ~ Normal(0, 1)
}
infer svi(steps=1.5, guide=foo, lr=true)
""",
        """\
model.bdl:4:11: error: option 'steps' of svi: expected an integer, got 1.5
  infer svi(steps=1.5, guide=foo, lr=true)
            ^~~~~~~~~
model.bdl:4:22: error: option 'guide' of svi: expected one of normal, delta, lowrank, iaf, custom, got 'foo'
  infer svi(steps=1.5, guide=foo, lr=true)
                       ^~~~~~~~~
model.bdl:4:33: error: option 'lr' of svi: expected a number, got true
  infer svi(steps=1.5, guide=foo, lr=true)
                                  ^~~~~~~""",
        id="infer_bad_option_values",
    ),
    pytest.param(
        """\
model Linear(y: real[N]) {
  y ~ Normal(0, 1)
}
infer Lienar with nuts()
""",
        """\
model.bdl:4:19: error: 'infer' names unknown model 'Lienar'
  infer Lienar with nuts()
                    ^~~~
  note: did you mean 'Linear'?""",
        id="infer_unknown_model",
    ),
    pytest.param(
        """\
model M(x: real[N, 3], y: real[N]) {
  w: real[4] ~ Normal(0, 1)
  s ~ HalfNormall(1)
  y ~ Normal(x @ w, sigma)
}
infer nuts(chains=0)
""",
        """\
model.bdl:3:7: error: unknown distribution 'HalfNormall'
    s ~ HalfNormall(1)
        ^~~~~~~~~~~
  note: did you mean 'HalfNormal'?
model.bdl:4:14: error: size mismatch between the operands of '@' [N, 3] and [4]: 3 vs 4
    y ~ Normal(x @ w, sigma)
               ^~~~~
model.bdl:4:21: error: 'sigma' is not defined
    y ~ Normal(x @ w, sigma)
                      ^~~~~
model.bdl:6:12: error: option 'chains' of nuts: must be at least 1
  infer nuts(chains=0)
             ^~~~~~~~""",
        id="several_checker_errors_all_reported",
    ),
    pytest.param(
        """\
model M(t: real[T], y: real[T]) {
  z ~ fractional_sde(times=t, drift=(x) => -x)
  y ~ Normal(z[:, 0], 0.1)
}
""",
        """\
model.bdl:2:37: error: 'drift' of fractional_sde takes a function of 2 parameters (state, time), but this one has 1
    z ~ fractional_sde(times=t, drift=(x) => -x)
                                      ^~~~~~~~~""",
        id="function_literal_wrong_arity",
    ),
    pytest.param(
        """\
model M(t: real[T], y: real[T]) {
  param theta: real<lower=0> = 1.0
  z ~ fractional_sde(times=t, drift=(x, s) => -theta * (x - mu))
  y ~ Normal(z[:, 0], 0.1)
}
""",
        """\
model.bdl:3:61: error: 'mu' is not defined
    z ~ fractional_sde(times=t, drift=(x, s) => -theta * (x - mu))
                                                              ^~
  note: in a function literal's body a name is one of its parameters (x, s) or a name of the model""",
        id="function_literal_unknown_name",
    ),
    pytest.param(
        """\
model M(t: real[T], y: real[T]) {
  b = 2 * ((x, s) => -x)
  y ~ Normal((x) => x, 1)
}
""",
        """\
model.bdl:2:12: error: a function literal is allowed only as an argument that takes a function or as the value of a name
    b = 2 * ((x, s) => -x)
             ^~~~~~~~~~~~
  note: such as drift=, diffusion= of fractional_sde; f= of scan; or b = (x, t) => ..., then drift=b
model.bdl:3:14: error: a function literal is allowed only as an argument that takes a function or as the value of a name
    y ~ Normal((x) => x, 1)
               ^~~~~~~~
  note: such as drift=, diffusion= of fractional_sde; f= of scan; or b = (x, t) => ..., then drift=b""",
        id="function_literal_outside_a_function_argument",
    ),
    pytest.param(
        """\
model M(t: real[T], y: real[T]) {
  z ~ fractional_sde(times=t, drift=(x[0], s) => -x, diffusion=(x, x) => 1.0)
  y ~ Normal(z[:, 0], 0.1)
}
""",
        """\
model.bdl:2:38: error: a function literal's parameters must be names: (x, t) => ...
    z ~ fractional_sde(times=t, drift=(x[0], s) => -x, diffusion=(x, x) => 1.0)
                                       ^~~~
model.bdl:2:68: error: parameter 'x' is named twice
    z ~ fractional_sde(times=t, drift=(x[0], s) => -x, diffusion=(x, x) => 1.0)
                                                                     ^""",
        id="function_literal_parameter_not_a_name",
    ),
    pytest.param(
        """\
model M(t: real[T], y: real[T]) {
  z ~ fractional_sde(times=t, drift=(x, s) => [x, x], diffusion=(x, s) => Normal(x, 1))
  y ~ Normal(z[:, 0], 0.1)
}
""",
        """\
model.bdl:2:47: error: 'drift' of fractional_sde must give a value of shape [1], but this body has shape [2, 1]
    z ~ fractional_sde(times=t, drift=(x, s) => [x, x], diffusion=(x, s) => Normal(x, 1))
                                                ^~~~~~
model.bdl:2:75: error: the body of 'diffusion' of fractional_sde must be numeric, not a dist value
    z ~ fractional_sde(times=t, drift=(x, s) => [x, x], diffusion=(x, s) => Normal(x, 1))
                                                                            ^~~~~~~~~~~~""",
        id="function_literal_body_shape_and_kind",
    ),
    pytest.param(
        """\
model M(t: real[T], y: real[T]) {
  z ~ fractional_sde(times=t, noise=addtive)
  y ~ Normal(z[:, 0], 0.1)
}
""",
        """\
model.bdl:2:37: error: argument 'noise' of fractional_sde must be one of general, additive
    z ~ fractional_sde(times=t, noise=addtive)
                                      ^~~~~~~
  note: did you mean 'additive'?""",
        id="construct_choice_unknown_word",
    ),
    pytest.param(
        """\
model M(pixels: int[N, 4]) {
  m = monotone_dbm(categorical(4, 2), cap=-2.5)
  pixels ~ m.visible
}
""",
        """\
model.bdl:2:43: error: argument 'cap' of monotone_dbm must be between 1 and 2, got -2.5
    m = monotone_dbm(categorical(4, 2), cap=-2.5)
                                            ^~~~""",
        id="construct_argument_out_of_range",
    ),
    pytest.param(
        """\
model M(x: real[N, 1], y: real[N]) {
  f = mlp(1, [4], 1)
  f ~ gp_prior(rbf(), inputs=x, init_scale=0, min_shape=2)
  y ~ Normal(f(x)[:, 0], 1)
}
""",
        """\
model.bdl:3:44: error: argument 'init_scale' of gp_prior must be positive, got 0
    f ~ gp_prior(rbf(), inputs=x, init_scale=0, min_shape=2)
                                             ^
model.bdl:3:57: error: argument 'min_shape' of gp_prior must be in [0, 2), got 2
    f ~ gp_prior(rbf(), inputs=x, init_scale=0, min_shape=2)
                                                          ^""",
        id="construct_argument_outside_open_interval",
    ),
    pytest.param(
        """\
model M(t: real[T], y: real[T]) {
  z ~ fractional_sde(times=t, K=0, kind=7, hurst=1)
  y ~ Normal(z[:, 0], 0.1)
}
""",
        """\
model.bdl:2:33: error: argument 'K' of fractional_sde must be at least 1, got 0
    z ~ fractional_sde(times=t, K=0, kind=7, hurst=1)
                                  ^
model.bdl:2:41: error: argument 'kind' of fractional_sde must be between 1 and 2, got 7
    z ~ fractional_sde(times=t, K=0, kind=7, hurst=1)
                                          ^
model.bdl:2:50: error: argument 'hurst' of fractional_sde must be in (0, 1), got 1
    z ~ fractional_sde(times=t, K=0, kind=7, hurst=1)
                                                   ^""",
        id="fractional_sde_argument_ranges",
    ),
    pytest.param(
        """\
model M(x: real[N, 1], y: real[N]) {
  f = mlp(1, [8], 1)
  f ~ gaussian_prior(rbf(lengthscale=1))
  y ~ Normal(f(x)[:, 0], 0.5)
}
""",
        """\
model.bdl:3:22: error: argument 'scale' of gaussian_prior must be a number, not a kernel value
    f ~ gaussian_prior(rbf(lengthscale=1))
                       ^~~~~~~~~~~~~~~~~~
  note: gp_prior takes a kernel""",
        id="network_prior_kernel_for_a_number",
    ),
    pytest.param(
        """\
model M(x: real[N, 1], y: real[N]) {
  f = mlp(1, [8], 1)
  f ~ gp_prior(rbf(), inputs=x, measure=gird)
  y ~ Normal(f(x)[:, 0], 0.5)
}
""",
        """\
model.bdl:3:41: error: argument 'measure' of gp_prior must be one of data, grid
    f ~ gp_prior(rbf(), inputs=x, measure=gird)
                                          ^~~~
  note: did you mean 'grid'?""",
        id="gp_prior_measure_word",
    ),
    pytest.param(
        """\
model M(xc: real[C, 1], yc: real[C, 1], xt: real[T, 1], yt: real[T, 1]?) {
  g = cnp(x_dim=2, y_dim=1, hidden=8)
  yt ~ g(xc, yc, xt)
}
""",
        """\
model.bdl:3:10: error: input 'xc' of 'g' must be [points, 2] or [tasks, points, 2] (x_dim=2), got [C, 1]
    yt ~ g(xc, yc, xt)
           ^~
model.bdl:3:18: error: input 'xt' of 'g' must be [points, 2] or [tasks, points, 2] (x_dim=2), got [T, 1]
    yt ~ g(xc, yc, xt)
                   ^~""",
        id="neural_process_input_features",
    ),
    pytest.param(
        """\
model M(xc: real[C, 1], yc: real[C], xt: real[T, 1], yt: real[T, 1]?) {
  g = cnp(x_dim=1, y_dim=1, hidden=8)
  yt ~ g(xc, yc, xt)
}
""",
        """\
model.bdl:3:14: error: input 'yc' of 'g' must be [points, 1] or [tasks, points, 1] (y_dim=1), got [C]
    yt ~ g(xc, yc, xt)
               ^~
  note: declare it with a feature dimension, such as real[C, 1]""",
        id="neural_process_input_without_feature_dimension",
    ),
    pytest.param(
        """\
model M(xc: real[C, 1], yc: real[C, 1], xt: real[T, 1], yt: real[T, 1]?) {
  g = cnp(x_dim=1.5, y_dim=1, hidden=8)
  yt ~ g(xc, yc, xt)
}
""",
        """\
model.bdl:2:17: error: 'x_dim' of cnp must be a size (an integer or a size name)
    g = cnp(x_dim=1.5, y_dim=1, hidden=8)
                  ^~~""",
        id="neural_process_dimension_not_a_size",
    ),
    pytest.param(
        """\
model M(xc: real[C, 1], yc: real[C, 1], xt: real[T, 1], yt: real[T, 1]?) {
  g = martingale_np(x_dim=1, y_dim=1, hidden=8)
  yt ~ g(xc, yc)
}
""",
        """\
model.bdl:3:8: error: 'g' (martingale_np) takes 3 inputs, g(xc, yc, xt), but gets 2 ('xt' is missing)
    yt ~ g(xc, yc)
         ^~~~~~~~~""",
        id="neural_process_missing_target_inputs",
    ),
    pytest.param(
        """\
model M(xc: real[C, 1], yc: real[C, 1], xt: real[T, 1], yt: real[T, 1]?) {
  g = cnp(x_dim=1, y_dim=1, hidden=8)
  yt ~ g(xc, yc, xt, xt)
}
""",
        """\
model.bdl:3:22: error: 'g' (cnp) takes 3 inputs, g(xc, yc, xt), but gets 4
    yt ~ g(xc, yc, xt, xt)
                       ^~""",
        id="neural_process_extra_input",
    ),
    pytest.param(
        """\
model M(xc: real[C, 1], yc: real[C, 1], xt: real[T, 1], yt: real[T, 1]?) {
  g = cnp(x_dim=1, y_dim=1, hidden=8)
  yt ~ g(xc, yc, xt=xt)
}
""",
        """\
model.bdl:3:18: error: 'g' takes its inputs by position: g(xc, yc, xt)
    yt ~ g(xc, yc, xt=xt)
                   ^~""",
        id="neural_process_keyword_input",
    ),
    pytest.param(
        """\
model M(y: vector[N]) {
  y ~ Normal(0, 1)
}
""",
        """\
model.bdl:1:12: error: unknown type 'vector'
  model M(y: vector[N]) {
             ^~~~~~~~~
  note: Stan's vector[...] is written real[N] in BDL""",
        id="stan_habit_vector_type",
    ),
    pytest.param(
        """\
model M(y: real[N]) {
  mu ~ Normal(0, 1)
  for (n in 1:N) {
    y ~ Normal(mu, 1)
  }
  target += 1
}
""",
        """\
model.bdl:3:7: error: unexpected '('; expected ':', '=' or '~'
    for (n in 1:N) {
        ^
  note: BDL has no loops: write the statement on whole vectors, `plate n in N { ... }` for conditionally independent terms, or `scan((carry, x) => ..., init, xs)` for a recursion over time (AR, GARCH, an HMM's forward pass)
model.bdl:6:10: error: unexpected '+'; expected ':', '=' or '~'
    target += 1
           ^
  note: add a term to the log density with `factor(expr)`""",
        id="stan_habit_loop_and_target",
    ),
    pytest.param(
        """\
model M(x: real[N], y: real[N]) {
  mu ~ Normal(0, 1)
  plate i in N {
    y[i] ~ Normal(mu + x[i], 1)
  }
}
""",
        """\
model.bdl:4:6: error: unexpected '['; expected ':', '=' or '~'
      y[i] ~ Normal(mu + x[i], 1)
       ^
  note: a `~` statement observes or draws a whole variable: write `y ~ ...`; inside `plate i in N { ... }` its leading dimension is the plate's, and `x[i]` reads the matching element of other data; a density on part of a latent, such as a random walk's steps, is `factor(log_prob(Normal(0, s), x[1:] - x[:-1]))`""",
        id="stan_habit_indexed_tilde",
    ),
    pytest.param(
        """\
model M(y: real[N]) {
  mu ~ Normal(0, 1e400)
  y ~ Normal(mu, 1)
}
""",
        """\
model.bdl:2:18: error: the number 1e400 is too large: it overflows a 64-bit float
    mu ~ Normal(0, 1e400)
                   ^~~~~""",
        id="number_overflows",
    ),
    pytest.param(
        """\
model M(t: real[T], y: real[T]) {
  z ~ fractional_sde(times=t, drift=tanh)
  y ~ Normal(z[:, 0], 0.1)
}
""",
        """\
model.bdl:2:37: error: 'drift' of fractional_sde takes a function literal, not the name of a built-in function
    z ~ fractional_sde(times=t, drift=tanh)
                                      ^~~~
  note: write (state, time) => tanh(state)""",
        id="function_argument_given_a_builtin_name",
    ),
    pytest.param(
        """\
model M(t: real[T], y: real[T]) {
  b = (x) => -x
  c = b + 1
  z ~ fractional_sde(times=t, drift=b, diffusion=Normal(b, 1))
  y ~ Normal(z[:, 0], 0.1)
}
""",
        """\
model.bdl:3:7: error: 'b' is a function: it can only be given as an argument that takes a function
    c = b + 1
        ^
  note: such as drift=, diffusion= of fractional_sde; f= of scan; it is defined at 2:3
model.bdl:4:37: error: 'drift' of fractional_sde takes a function of 2 parameters (state, time), but 'b' has 1
    z ~ fractional_sde(times=t, drift=b, diffusion=Normal(b, 1))
                                      ^
  note: 'b' is defined at 2:3
model.bdl:4:57: error: 'b' is a function: it can only be given as an argument that takes a function
    z ~ fractional_sde(times=t, drift=b, diffusion=Normal(b, 1))
                                                          ^
  note: such as drift=, diffusion= of fractional_sde; f= of scan; it is defined at 2:3""",
        id="named_function_misused_and_wrong_arity_at_its_use",
    ),
    pytest.param(
        """\
model M(t: real[T], y: real[T]) {
  b = (x, s) => [x, x]
  z ~ fractional_sde(times=t, drift=b)
  y ~ Normal(z[:, 0], 0.1)
}
""",
        """\
model.bdl:2:17: error: 'drift' of fractional_sde must give a value of shape [1], but this body has shape [2, 1]
    b = (x, s) => [x, x]
                  ^~~~~~
  note: in function 'b', given as 'drift' of fractional_sde at 3:37""",
        id="named_function_body_shape_checked_at_its_use",
    ),
    pytest.param(
        """\
model M(t: real[T], y: real[T]) {
  b: real = (x, s) => -x * mu
  w = b(1.0, 2.0)
  z ~ fractional_sde(times=t, drift=b)
  y ~ Normal(z[:, 0], 0.1)
}
""",
        """\
model.bdl:2:6: error: 'b' is a function and takes no declared type
    b: real = (x, s) => -x * mu
       ^~~~
  note: write b = (x, s) => ...
model.bdl:2:28: error: 'mu' is not defined
    b: real = (x, s) => -x * mu
                             ^~
  note: in a function literal's body a name is one of its parameters (x, s) or a name of the model
model.bdl:3:7: error: 'b' is a function: it can only be given as an argument that takes a function, not called
    w = b(1.0, 2.0)
        ^
  note: such as drift=, diffusion= of fractional_sde; f= of scan; it is defined at 2:3""",
        id="named_function_declared_type_unknown_name_once_and_called",
    ),
    pytest.param(
        """\
model M(y: real[N]) {
  mu ~ Normal(0, 5)
  sigma ~ Normal(0, 1)
  plate N {
    y ~ Normal(mu, sigma)
  }
}
""",
        """\
model.bdl:5:20: error: 'sigma' can be any real number (its prior is Normal), but Normal's scale must be positive
      y ~ Normal(mu, sigma)
                     ^~~~~
  note: give 'sigma' a prior on that set, or declare it bounded: sigma: real<lower=0> ~ Normal(...)""",
        id="real_latent_as_a_scale",
    ),
    pytest.param(
        """\
model M(y: int[N]) {
  p ~ Normal(0, 1)
  plate N {
    y ~ Bernoulli(probs=p)
  }
}
""",
        """\
model.bdl:4:25: error: 'p' can be any real number (its prior is Normal), but Bernoulli's probs must be in [0, 1]
      y ~ Bernoulli(probs=p)
                          ^
  note: give 'p' a prior on that set, or map it there (exp, sigmoid, softmax)""",
        id="real_latent_as_a_probability",
    ),
    pytest.param(
        """\
model M(lambda: real[N]) {
  mu ~ Normal(0, 1)
  plate N {
    lambda ~ Normal(mu, 1)
  }
}
""",
        """\
model.bdl:1:9: error: 'lambda' cannot name a data argument or size: it is reserved in the generated Python
  model M(lambda: real[N]) {
          ^~~~~~
  note: rename it, e.g. 'lambda_'""",
        id="reserved_python_name_for_data",
    ),
    pytest.param(
        """\
model M(y: real[N]) {
  true ~ Normal(0, 1)
  plate N {
    y ~ Normal(true, 1)
  }
}
""",
        """\
model.bdl:2:3: error: 'true' is a boolean literal and cannot name a value
    true ~ Normal(0, 1)
    ^~~~
  note: rename it, e.g. 'is_true'""",
        id="boolean_literal_as_a_name",
    ),
    pytest.param(
        """\
model M(y: real[N]) {
  mu ~ Normal(0, 1)
  p = inv_logit(mu)
  plate N {
    y ~ Normal(p, 1)
  }
}
""",
        """\
model.bdl:3:7: error: unknown function 'inv_logit'
    p = inv_logit(mu)
        ^~~~~~~~~
  note: Stan's inv_logit(x) is sigmoid(x) here""",
        id="stan_spelling_with_a_different_near_name",
    ),
    pytest.param(
        """\
model RW(y: real[T]) {
  q ~ HalfNormal(1)
  x: real[T] ~ Normal(0, 10)
  dx = x[1:] - x[:-1]
  dx ~ Normal(0, q)
  y ~ Normal(x, 0.5)
}
""",
        """\
model.bdl:5:3: error: 'dx' is computed from latents and cannot be drawn with '~'
    dx ~ Normal(0, q)
    ^~
  note: give it a density with factor(log_prob(Normal(...), dx)), Stan's target +=; no Jacobian of dx's map is added""",
        id="tilde_on_a_computed_value",
    ),
    pytest.param(
        """\
model M(y: real[N]) {
  mu ~ Normal(0, 1)
  y ~ Normal(mu, 1) T[0, ]
}
""",
        """\
model.bdl:3:21: error: unexpected name 'T'; expected ';', '}' or end of line
    y ~ Normal(mu, 1) T[0, ]
                      ^
  note: BDL writes a truncation as a distribution: did you mean Truncated(Normal(mu, 1), low=0)?""",
        id="stan_truncation",
    ),
]


@pytest.mark.parametrize("source, expected", FRONT_CASES)
def test_front_end_error(source, expected):
    with pytest.raises(ppl.BdlError) as e:
        front(source, "model.bdl")
    assert e.value.render() == expected
    assert str(e.value) == expected


BIND_CASES = [
    pytest.param(
        """\
model M(y: real[N], sigma: real<lower=0>[N]) {
  y ~ Normal(0, sigma)
}
""",
        {"y": [1.0, 2.0]},
        """\
model.bdl:1:21: error: missing data for 'sigma'
  model M(y: real[N], sigma: real<lower=0>[N]) {
                      ^
  note: it is a required argument of the model; mark it optional with '?' to sample it instead""",
        id="bind_missing_data",
    ),
    pytest.param(
        """\
model M(y: real[N],
        x: real[N, D]) {
  y ~ Normal(0, 1)
  x ~ Normal(0, 1)
}
""",
        {"y": [1.0, 2.0], "x": [[1.0], [2.0], [3.0]]},
        """\
model.bdl:2:9: error: size N is 2 from 'y' (dimension 0) but 3 from 'x' (dimension 0)
          x: real[N, D]) {
          ^
  note: 'y' is declared at 1:9""",
        id="bind_size_bound_twice",
    ),
    pytest.param(
        """\
model M(y: real[N]) {
  y ~ Normal(0, 1)
}
""",
        {"y": [1.0, 2.0], "N": 3},
        """\
model.bdl:1:9: error: size N is 2 from 'y' (dimension 0) but the data key 'N' says 3
  model M(y: real[N]) {
          ^""",
        id="bind_size_data_key_disagrees",
    ),
    pytest.param(
        """\
model M(N: int, y: real[N]) {
  y ~ Normal(0, 1)
}
""",
        {"y": [1.0, 2.0], "N": 3},
        """\
model.bdl:1:9: error: size N is 2 from 'y' (dimension 0) but the data key 'N' says 3
  model M(N: int, y: real[N]) {
          ^""",
        id="bind_size_argument_disagrees",
    ),
    pytest.param(
        """\
model M(x: real[N, D], y: real[K]) {
  w: real[D] ~ Normal(0, 1)
  y ~ Normal(x @ w, 1)
}
""",
        {"y": [1.0, 2.0], "x": [[1.0], [2.0], [3.0]]},
        """\
model.bdl:3:7: error: size mismatch between the distribution [N] and 'y' [K]: N = 3 but K = 2 (sizes from the data)
    y ~ Normal(x @ w, 1)
        ^
  note: N is 3 from 'x' (dimension 0)
  note: K is 2 from 'y' (dimension 0)""",
        id="bind_deferred_size_check",
    ),
    pytest.param(
        """\
model M(y: int[N]) {
  y ~ Poisson(3)
}
""",
        {"y": [1, 2.5]},
        """\
model.bdl:1:9: error: data 'y': it is declared int but holds non-integer values
  model M(y: int[N]) {
          ^""",
        id="bind_int_data_not_integer",
    ),
    pytest.param(
        """\
model M(y: real<lower=0>[N]) {
  y ~ HalfNormal(1)
}
""",
        {"y": [1.0, -2.5]},
        """\
model.bdl:1:9: error: data 'y' must be >= 0 (declared lower=0) but element 1 is -2.5
  model M(y: real<lower=0>[N]) {
          ^""",
        id="bind_lower_bound_violated",
    ),
    pytest.param(
        """\
model M(p: real<lower=0, upper=1>[N]) {
  p ~ Beta(1, 1)
}
""",
        {"p": [0.5, 1.5]},
        """\
model.bdl:1:9: error: data 'p' must be <= 1 (declared upper=1) but element 1 is 1.5
  model M(p: real<lower=0, upper=1>[N]) {
          ^""",
        id="bind_upper_bound_violated",
    ),
    pytest.param(
        """\
model M(y: real[N]) {
  y ~ Normal(0, 1)
}
""",
        {"y": [[1.0, 2.0]]},
        """\
model.bdl:1:9: error: data 'y' has 2 dimensions [1, 2] but is declared [N]
  model M(y: real[N]) {
          ^""",
        id="bind_wrong_rank",
    ),
    pytest.param(
        """\
model M(y: real[K + 1], z: real[K]) {
  y ~ Normal(0, 1)
  z ~ Normal(0, 1)
}
""",
        {"y": [1.0, 2.0, 3.0], "z": [1.0]},
        """\
model.bdl:1:9: error: 'y' dimension 0 is 3 but is declared K + 1 = 2
  model M(y: real[K + 1], z: real[K]) {
          ^
  note: K is 1 from 'z' (dimension 0)""",
        id="bind_composite_dimension",
    ),
    pytest.param(
        """\
model M(y: real[N]) {
  y ~ Normal(0, 1)
}
""",
        {"y": [1.0], "N": 1.5},
        """\
model.bdl:1:9: error: size 'N' (data key 'N') must be an integer, got 1.5
  model M(y: real[N]) {
          ^""",
        id="bind_size_not_an_integer",
    ),
    pytest.param(
        """\
model M(y: real[N]) {
  y ~ Normal(0, 1)
}
""",
        {"y": ["a", "b"]},
        """\
model.bdl:1:9: error: data 'y': it is declared real but holds strings
  model M(y: real[N]) {
          ^""",
        id="bind_strings_for_real",
    ),
]


@pytest.mark.parametrize("source, data, expected", BIND_CASES)
def test_data_binding_error(source, data, expected):
    model = ppl.compile(source, "model.bdl")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # none of these data sets has unused keys
        with pytest.raises(ppl.BdlError) as e:
            model.bind(data)
    assert e.value.render() == expected


def test_early_closing_brace_is_explained():
    # The '}' on line 5 ends the model, so line 6 is outside it; the ')' missing on line 2
    # hides the rest of its statement (line 3), and the junk on line 4 is its own error.
    source = """\
model M(y: real[N]) {
  a = (1
  b = 2 2
  c = 3 $
  d ~ Normal(0, 1) }
  e = 4
}
"""
    with pytest.raises(ppl.BdlError) as e:
        front(source, "model.bdl")
    assert e.value.render() == """\
model.bdl:3:3: error: unexpected name 'b'; expected ')'
    b = 2 2
    ^
  note: the '(' opened at 2:7 is not closed
model.bdl:4:9: error: unexpected character '$'
    c = 3 $
          ^
model.bdl:6:3: error: unexpected name 'e'; expected ';', 'guide', 'infer', 'model', end of file or end of line
    e = 4
    ^
  note: this is outside any model: the '}' at 5:20 closed the model before it
model.bdl:7:1: error: unexpected '}': no '{' is open here
  }
  ^"""


def test_file_level_error_has_no_source_line():
    with pytest.raises(ppl.BdlError) as e:
        front("", "empty.bdl")
    assert e.value.render() == (
        "empty.bdl:1:1: error: the file defines no model (expected 'model Name(...) {')")


def test_warning_renders_with_warning_severity():
    checked = front("model M(y: real[N], z: real[N]) {\n  y ~ Normal(0, 1)\n}\n", "m.bdl")
    (w,) = checked.warnings
    assert w.render("m.bdl", None) == "m.bdl:1:21: warning: data argument 'z' is never used"


def test_range_notation():
    from ppl.builtins import interval

    assert interval((1, 2)) == (1, False, 2, False, "between 1 and 2")
    assert interval("(0, 2]") == (0.0, True, 2.0, False, "in (0, 2]")
    assert interval("(0, inf)")[1:4] == (True, None, True)
    with pytest.raises(ValueError, match="malformed range"):
        interval("0, 2")


def test_a_misspelt_data_key_is_linked_to_the_missing_argument():
    model = ppl.compile("model M(y: real[N], sigma: real[N]) {\n  y ~ Normal(0, sigma)\n}\n",
                        "model.bdl")
    with pytest.warns(UserWarning, match="not used by model M: sigmas"):
        with pytest.raises(ppl.BdlError) as e:
            model.bind({"y": [1.0, 2.0], "sigmas": [1.0, 1.0]})
    assert e.value.render().endswith(
        "note: the data has 'sigmas', which the model does not use: a misspelling of 'sigma'?")


@pytest.mark.parametrize("call, message", [
    ('monotone_dbm(visible=categorical(4, 2), hidden=[categorical(4, 2)], rank=2.5)',
     "argument 'rank' of monotone_dbm must be a whole number, got 2.5"),
    ('monotone_dbm(visible=categorical(4, 2), hidden=[categorical(4, 2)], monotone="no")',
     "argument 'monotone' of monotone_dbm must be true or false, got \"no\""),
    ("martingale_np(x_dim=1, y_dim=1, hidden=1.5)",
     "argument 'hidden' of martingale_np must be a whole number, got 1.5"),
])
def test_whole_number_and_flag_options_are_located_check_errors(call, message):
    """Builtin.integers / Builtin.flags: a literal fraction for a count or a string for
    a true/false option is refused at check, at the argument (it ran 2 of 2.5 steps, or
    read "no" as true)."""
    src = f"model M(x: real[N]) {{\n  m = {call}\n}}\n"
    with pytest.raises(ppl.BdlError) as e:
        ppl.compile(src)
    text = str(e.value)
    col = src.splitlines()[1].index(call.split("=")[-1].rstrip(")")) + 1
    assert f"<string>:2:{col}: error: {message}" in text, text
    ppl.compile(src.replace("2.5", "2").replace('"no"', "false").replace("1.5", "8"))
