"""The checker's decisions on the layout of discrete labels summed out by Pyro's
enumeration (ppl.infer.discrete).

A label drawn outside every plate (``z ~ Categorical(w)``) is, summed out, [K, 1, ..., 1]:
its enumeration dim left of the model's plate dims, one unit dim per plate. A value
computed from it outside plates (``mu[z]``, ``w = 2 * mu[z]``) keeps that layout with its
own dims on the right, [K, 1, ..., own dims], as Pyro lays out a value of no plate. Where
such a value is read, the checker records how the generated code must place it, in the
tables of :class:`~ppl.check.checker.CheckedModel` that the lowering reads:

- ``pads``: unit dims on its right, so it meets per-element dims (``rt.per_element``);
- ``label_aligned``: its own dims moved onto the plates' dims (``rt.label_aligned``);
- ``label_vindex``: an index into its own dims, from the right (``Vindex``);
- ``label_dims``: a ``dim`` counted from the left, counted from the right instead;
- ``stacks``: a list (stack/cat) of its values, along its own dims;
- ``label_matmul``: ``@`` with it as an operand (``rt.label_matmul``);
- ``elem_reduce``: a reduction without ``dim``, over its own dims only.

:class:`LabelLayout` holds these decisions as methods of the checker (a mixin of
``_ModelChecker``), which provides the state they read: ``symbols``, ``plate_stack``,
``global_labels`` (labels drawn outside plates, and values computed from them there),
``_dist_bound``, the tables above, and the methods ``_plate_width``, ``_plate_names``
and ``err``.
"""

from __future__ import annotations

from ..syntax import ast
from . import sizes
from .types import Ty


class LabelLayout:
    """Where a value of a label drawn outside every plate goes (see the module)."""

    def _label_read(self, e) -> str | None:
        """The first label drawn outside every plate (or value computed from one there)
        that ``e`` reads, or None."""
        if not self.global_labels:
            return None
        return next((n for n in ast.names_read(e) if n in self.global_labels), None)

    def _reads_label(self, e) -> bool:
        return self._label_read(e) is not None

    def _label_value(self, e) -> bool:
        """Whether ``e``'s value is computed from a label drawn outside every plate and
        does not vary along the open plates (``mu[z]``, ``w`` of ``w = 2 * mu[z]``, ``z``
        itself): summed out, Pyro lays it out [K, 1, ..., own dims], the label's
        enumeration dim and a unit dim per plate left of its own dims."""
        return self._reads_label(e) and self._plate_width(e) == 0

    def _label_pad(self, node, mine: Ty, elem: int) -> Ty:
        """``mine``, the type of ``node``, padded for the per-element rank ``elem`` it
        meets (inside plates; outside them, the rank of the other operand) when ``node``
        reads a label drawn outside every plate.

        Summed out, such a label is [K, 1, ...] (its enumeration dim left of the plate
        dims), so its value broadcasts along the plate dims but not along per-element
        dims: ``x[i] + 2 * z`` with ``x[i]`` [N, D] would put K against N (silently
        wrong where K = N). Unit dims on its right (``rt.per_element``) make it [K, 1, 1],
        which meets [N, D] as a per-plate-element value does; with z a plain number it is
        the same broadcast. Outside plates this keeps the one layout of such values,
        [K, 1, ..., own dims] (``z * ones(D)`` is [K, 1, D], as ``mu[z]`` is)."""
        if mine.shape is None or not self._label_value(node):
            return mine
        units = elem - len(mine.shape)
        if units <= 0:
            return mine
        self.pads[id(node)] = (len(mine.shape), units)
        return Ty(mine.kind, sizes.widened(mine.shape, 0, units), dim=mine.dim, value=mine.value)

    def _label_in_call(self, e: ast.Call, name: str, args: list) -> None:
        """Refuse, inside plates, a call whose arguments meet a label drawn outside every
        plate with per-element values of higher rank (``where(x[i] > 0, z, 0.5)``): summed
        out, the label's enumeration dim would broadcast against a per-element dim
        (:meth:`_label_pad` widens it in arithmetic and distribution arguments, where the
        pairing is known; a function's arguments may not broadcast elementwise)."""
        if not self.plate_stack or not self.global_labels:
            return
        elem = 0
        for node, t in args:
            width = self._plate_width(node)
            if width and t.shape is not None:
                elem = max(elem, len(t.shape) - width)
        for node, t in args:
            if t.shape is not None and self._label_value(node) and len(t.shape) < elem:
                label = self._label_read(node)
                self.err(f"inside plate {', '.join(self._plate_names())}, {name}() meets "
                         f"'{label}', a discrete latent drawn outside every plate, with "
                         f"per-element values of {elem} dim{'s' if elem > 1 else ''}: "
                         "summed out, its values would be matched with a per-element "
                         "dimension", node.span,
                         ["combine it with arithmetic outside the call "
                          "(where(x[i] > 0, 1, 0) * z), or draw it in the plate"])
                return

    def _label_args(self, s: ast.Sample, dty: Ty, event, constraint) -> None:
        """A distribution argument computed from a label drawn outside every plate
        (``mu[z]``, ``w`` of ``w = 2 * mu[z]``) is [K, 1, ..., own dims] (``rt.label_aligned``):
        its own dims right of the model's plate dims. Where it has more dims than the
        site's per-element ``event`` dims, its leading ones are the dims of the plates the
        site is drawn in, as a plain value's would broadcast against them, and are moved
        there: a vector outside plates under a scalar distribution is drawn in one plate
        per dim where labels are summed out (codegen's enumeration plates: every dim of
        the argument), and ``mu[z]`` of shape [D] in ``plate d in D`` meets plate d."""
        if not self.global_labels or dty.event != 0 or event is None:
            return
        if self.plate_stack:
            own, plates = len(event), len(self.plate_stack)
        elif event and constraint is None:
            own, plates = 0, len(event)
        else:
            return
        found = self._dist_bound.get(id(s.dist))
        for pname, (node, t) in (found[1].items() if found is not None else ()):
            # a parameter's own event dims (Categorical's probs, OrderedLogistic's
            # cutpoints) are not plate dims: only the dims left of them are
            rank = _PARAM_EVENT_RANK.get((dty.dist, pname), 0)
            moved = min(len(t.shape or ()) - own - rank, plates)
            if moved > 0 and self._label_value(node):
                self.label_aligned[id(node)] = (tuple(range(-moved, 0)), len(t.shape))

    def _label_list(self, e: ast.ListLit, tys: list[Ty], shape) -> None:
        """A list literal of a label's values outside plates: stacked right of its
        summed-out dims, left of their own; an item with fewer own dims ([mu[z], z * 1.0]
        of mu[z] [D]) widened on its right so that it broadcasts against the others' own
        dims, not the label's."""
        self.stacks[id(e)] = -len(shape) - 1
        for x, t in zip(e.items, tys, strict=True):
            self._label_pad(x, t, len(shape))

    def _label_join(self, e: ast.Call, bound: dict) -> None:
        """stack/cat of a label's values without ``dim``: along their own first dim
        (stack: a new one), right of the label's summed-out dims."""
        xs = bound.get("xs")
        rank = _own_rank(xs[1]) if xs is not None else None
        if xs is not None and "dim" not in bound and rank and self._label_value(xs[0]):
            self.stacks[id(e)] = -rank

    def _label_dim(self, bound: dict) -> None:
        """A ``dim`` counted from the left (``sum(w, dim=0)``) of a label's value is one
        of the value's own dims, right of the label's summed-out dims: counted from the
        right in the generated code."""
        first, dim = next(iter(bound.values()), None), bound.get("dim")
        rank = _own_rank(first[1]) if first is not None else None
        if dim is not None and isinstance(dim[0], ast.Number) and dim[0].value >= 0 \
                and rank and self._label_value(first[0]):
            self.label_dims[id(dim[0])] = rank

    def _label_reduction(self, e: ast.Call, bound: dict) -> bool:
        """Whether a reduction without ``dim`` reduces a label's value: then over the
        value's own dims only (``sum(mu[z])`` is one sum per label value, not over the
        summed-out labels; ``rt.reduce_elements``)."""
        first = next(iter(bound.values()), None)
        if first is not None and first[1].shape and self._label_value(first[0]):
            self.elem_reduce[id(e)] = len(first[1].shape)
            return True
        return False

    def _label_index(self, e: ast.Index, base: Ty) -> None:
        """``w[d]`` of ``w = mu[z]``: the indices read w's own dims, from the right, with
        its label dims broadcast against them (``Vindex(w)[..., d]``)."""
        if base.shape and self._reads_label(e.value):
            self.label_vindex[id(e)] = len(base.shape)

    def _label_matmul(self, e: ast.BinOp, a: Ty, b: Ty) -> None:
        """``A @ mu[z]`` (or ``mu[z] @ B``): a vector operand is made a one-row (column)
        matrix so that the label's dims stay batch dims (``rt.label_matmul``)."""
        if a.shape is not None and b.shape is not None and any(
                self._label_value(x) for x in (e.left, e.right)) \
                and self._plate_width(e) == 0:
            self.label_matmul[id(e)] = (len(a.shape), len(b.shape))


def _own_rank(t: Ty) -> int | None:
    """How many dims a value has, counting a list's as its stacked length and the items'
    (cat's list: the items' when they agree)."""
    if t.shape is not None:
        return len(t.shape)
    ranks = {len(x.shape) if x.shape is not None else None for x in t.value or ()} \
        if t.kind == "list" else set()
    return ranks.pop() if len(ranks) == 1 else None


# The event rank of the vector parameters of scalar distributions (the only ones with
# such parameters, by Pyro's arg_constraints): their last dims are one draw's, not batch.
_PARAM_EVENT_RANK = {("Categorical", "probs"): 1, ("Categorical", "logits"): 1,
                     ("OrderedLogistic", "cutpoints"): 1}
