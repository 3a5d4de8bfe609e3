"""The decode step shared by the matrix-state recurrences (`templates/recurrent_step.py.jinja`):
the scalar-decay rule (ssd/), the gated delta rule (gated_delta_rule/) and RWKV-6's WKV (wkv6/),
each bound in its own op's folder beside the reference it is tested against."""
