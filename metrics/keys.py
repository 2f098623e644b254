"""Names of the values a task's scoring writes into a metrics file (PROTOCOL.md s.4), defined once.

The scoring suite (`metrics.suite`) writes these keys and the pipeline, the external scorer, the report and
the gate read them back; a constant here instead of a repeated string literal means a typo is a NameError,
not a silently missing column. The string values are part of the metrics file format: changing one changes
every published file. As torch-fidelity's `KEY_METRIC_*`.

Per-task values (one number each; intervals in `ci95`): the headline `joint` and its parts, then the
reported-only values. A judge's second opinion appends its suffix (e.g. `KEY_METRIC_JOINT + "_dlib"`).
"""

from __future__ import annotations

# Headline and its parts (PROTOCOL.md s.4 v3): joint_i = verified_i x age_score_i x realistic_i.
KEY_METRIC_JOINT = "joint"
KEY_METRIC_AGE_SCORE = "age_score"
KEY_METRIC_ID_RATE = "id_rate"
KEY_METRIC_REALISM = "realism"
# Reported, never ranked.
KEY_METRIC_JOINT_DECADE = "joint_decade"
KEY_METRIC_GAP_CLOSURE = "gap_closure"
KEY_METRIC_GAP = "gap"
KEY_METRIC_AGE_ACC = "age_acc"
KEY_METRIC_AGE_ACC_REAL = "age_acc_real"
KEY_METRIC_AGE_ACC_REL = "age_acc_rel"
KEY_METRIC_AGE_MEAN = "age_mean"
KEY_METRIC_AGE_GAIN = "age_gain"
KEY_METRIC_AGE_FAIL = "age_fail"
KEY_METRIC_ID_SIM = "id_sim"
KEY_METRIC_ID_FAIL = "id_fail"
KEY_METRIC_FID = "fid"
KEY_METRIC_KID_MEAN = "kid_mean"
KEY_METRIC_KID_STD = "kid_std"
KEY_METRIC_CYCLE_L1 = "cycle_l1"
KEY_METRIC_FACE_FAIL = "face_fail"
KEY_METRIC_FACE_FOUND_IN = "face_found_in"

# Counts that describe the task's inputs.
KEY_N = "n"
KEY_MISSING = "missing"
KEY_CYCLE_MISSING = "cycle_missing"
KEY_FID_N = "fid_n"
KEY_N_REAL_TARGET = "n_real_target"
KEY_N_MANIFOLD = "n_manifold"

# Structures beside the values.
KEY_CI95 = "ci95"
KEY_CI_WILSON = "ci_wilson"
KEY_BREAKDOWN = "breakdown"
KEY_PER_FACE = "per_face"
KEY_SEEDS = "seeds"
KEY_SEED_SPREAD = "seed_spread"

# The per-face record (PROTOCOL.md s.4 v3 "Per-face record"): one list per key, ordered by input file name.
KEY_FACE_FILE = "file"
KEY_FACE_FOUND = "face_found"
KEY_FACE_AGE_IN = "age_in"
KEY_FACE_AGE_OUT = "age_out"
KEY_FACE_ID_SIM = KEY_METRIC_ID_SIM
KEY_FACE_VERIFIED = "verified"
KEY_FACE_AGE_SCORE = KEY_METRIC_AGE_SCORE
KEY_FACE_REALISTIC = "realistic"
KEY_FACE_JOINT = KEY_METRIC_JOINT
#: The per-face record's nine keys, in this order.
PER_FACE_KEYS = (
    KEY_FACE_FILE,
    KEY_FACE_FOUND,
    KEY_FACE_AGE_IN,
    KEY_FACE_AGE_OUT,
    KEY_FACE_ID_SIM,
    KEY_FACE_VERIFIED,
    KEY_FACE_AGE_SCORE,
    KEY_FACE_REALISTIC,
    KEY_FACE_JOINT,
)
