"""Waveform model of the synthetic PTB-XL: a 3-D heart dipole projected onto 12 leads.

Each beat is a sum of Gaussian bumps (P, QRS parts, ST, T), each with its own 3-D vector in heart
coordinates (x: patient's left, y: inferior/feet, z: anterior). Rhythm sets the beat times,
diagnoses reshape the bumps, the patient rotates and scales the whole dipole. Leads I, II and
V1-V6 are projections plus independent noise; III, aVR, aVL, aVF follow from I and II (Einthoven
and Goldberger) on the digital values, as in a real recorder.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LEADS = ("I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6")
DURATION_S = 10.0


def _unit(v: list[float]) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64)
    return a / np.linalg.norm(a)


# Lead vectors of the 8 independent leads I, II, V1..V6 (precordial ones scaled: closer electrodes).
_LEAD_VECS = np.stack([
    _unit([1.0, 0.0, 0.0]), _unit([0.5, 0.866, 0.0]),
    1.3 * _unit([-0.42, 0.05, 0.91]), 2.0 * _unit([-0.07, 0.05, 1.0]), 2.0 * _unit([0.3, 0.1, 0.95]),
    1.8 * _unit([0.55, 0.15, 0.82]), 1.4 * _unit([0.85, 0.15, 0.5]), 1.1 * _unit([0.97, 0.15, 0.15]),
])  # (8, 3)

# Territories of ischaemia / infarction as unit vectors pointing at the affected wall.
TERRITORIES = {
    "inf": _unit([0.0, 1.0, 0.05]), "infl": _unit([0.6, 0.8, 0.0]), "ant": _unit([0.15, 0.0, 1.0]),
    "as": _unit([-0.35, 0.0, 1.0]), "al": _unit([0.7, 0.0, 0.7]), "lat": _unit([1.0, -0.25, 0.2]),
}

# Beat components (Gaussian bumps; centres relative to the R peak, in seconds): P wave, late P (left atrial),
# septal q, early R, main R, terminal S, R' (right bundle branch block), ST segment, T wave, pacing spike.
P, P2, Q, R1, R2, S, RP, ST, T, SPIKE = range(10)
_K = 10


@dataclass(frozen=True)
class WaveSpec:
    """Everything that shapes one record's waveform (seconds, mV, bpm); effects are strengths in [0, 1]."""

    rhythm: str  # SR AFIB STACH SARRH SBRAD NONE PACE AFLT
    hr: float  # mean ventricular rate
    rr_var: float  # respiratory RR modulation depth (sinus) or log-RR sd (AFIB)
    gain: float = 1.0  # patient amplitude scale
    axis_deg: float = 55.0  # frontal QRS axis of the healthy heart
    rot_deg: tuple[float, float] = (0.0, 0.0)  # patient rotation about z (frontal) and y (horizontal)
    qrs_width: float = 1.0
    pr: float = 0.16
    qtc: float = 0.41
    t_gain: float = 1.0
    t_tilt_deg: float = 0.0  # frontal angle of the T vector relative to the QRS axis (normal variant)
    q_gain: float = 1.0  # size of the septal q (normal variant)
    # (name, strength) with name in lvh rvh lae lbbb rbbb lafb ivcd avb1 pace tflat, or kind:territory with
    # kind q (old infarct), ste (acute injury), std (ST depression), tinv (T inversion), e.g. ("q:inf", 0.5)
    effects: tuple[tuple[str, float], ...] = ()
    noise_sd: float = 0.015
    wander_mv: float = 0.05
    burst: bool = False
    powerline_mv: float = 0.0
    pvc_beats: tuple[int, ...] = ()  # beat indices replaced by premature ventricular beats


_U = {k: _unit(v) for k, v in {
    "p": [0.5, 0.8, 0.25], "z": [0.0, 0.0, 1.0], "p2": [0.1, 0.0, 1.0], "q": [-0.5, 0.3, 0.8], "r1": [0.5, 0.3, 0.8],
    "s": [-0.3, -0.5, -0.8], "rvh": [-0.6, 0.4, 0.7], "lb_q": [0.8, 0.1, -0.3], "lb_r1": [0.9, 0.1, -0.4],
    "lb_r2": [0.9, 0.25, -0.45], "pace_r2": [0.8, -0.5, -0.6], "spike": [0.0, -1.0, 0.3], "rp": [-0.7, 0.1, 0.7],
    "fib": [-0.2, 0.5, 0.85], "flutter": [0.1, -1.0, 0.2],
}.items()}


def _template(s: WaveSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Beat template: centres (K,), sds (K,), vectors (K, 3) relative to the R peak; plus the extra QT (s)."""
    e = dict(s.effects)
    lvh, rvh, lae, lbbb, rbbb, lafb, ivcd, avb1, pace, tflat = (
        e.get(k, 0.0) for k in ("lvh", "rvh", "lae", "lbbb", "rbbb", "lafb", "ivcd", "avb1", "pace", "tflat"))
    w = s.qrs_width * (1 + 0.75 * lbbb + 0.3 * rbbb + 0.45 * ivcd + 0.1 * lafb + 0.08 * lvh + 0.9 * pace)
    a = np.radians(s.axis_deg * (1 - lafb) - 50.0 * lafb + 40.0 * rvh)
    pr = s.pr + 0.1 * avb1 + 0.06 * avb1**0.5  # first-degree AV block: PR 0.22-0.32 s
    c = np.array([-0.04 * w - pr + 0.05, -0.04 * w - pr + 0.09, -0.022 * w, -0.01 * w, 0.004 * w,
                  0.026 * w, 0.05 + 0.03 * rbbb, 0.0, 0.0, -0.05 * w - 0.02])
    sd = np.array([0.02 * (1 + 0.4 * lae), 0.02, 0.007 * w, 0.008 * w, 0.01 * w, 0.009 * w,
                   0.012 + 0.01 * rbbb, 0.0, 0.0, 0.004])
    v = np.zeros((_K, 3))
    v[P] = 0.12 * _U["p"]
    v[P2] = -0.09 * lae * _U["p2"]
    v[Q] = 0.12 * s.q_gain * _U["q"]
    v[R1] = 0.6 * _U["r1"]
    v[R2] = 1.5 * _unit([np.cos(a), np.sin(a), -0.45 - 0.3 * lvh])
    v[S] = 0.6 * _U["s"]
    b = a - 0.2 + np.radians(s.t_tilt_deg)
    v[T] = 0.35 * s.t_gain * _unit([np.cos(b), 0.9 * np.sin(b), 0.6])
    # Hypertrophy: voltage. Right hypertrophy: anterior-right forces (tall R in V1).
    v[R2] *= 1 + 0.9 * lvh
    v[S] *= 1 + 1.0 * lvh
    v[R1] += 0.9 * rvh * _U["rvh"]
    # Left bundle branch block (and ventricular pacing): no septal q, broad leftward-posterior R,
    # no terminal S, discordant ST-T.
    lb = max(lbbb, pace)
    if lb > 0:
        v[Q] = (1 - lb) * v[Q] + lb * 0.2 * _U["lb_q"]
        v[R1] = (1 - lb) * v[R1] + lb * 0.6 * _U["lb_r1"]
        v[R2] = (1 - lb) * v[R2] + lb * 1.6 * _U["pace_r2" if pace else "lb_r2"]
        v[S] *= 1 - lb
        c[R1], c[R2], sd[R2] = -0.012 * w, (0.004 + 0.008 * lb) * w, 0.011 * w  # notched, slow, broad R
        v[T] = (1 - lb) * v[T] - lb * 0.45 * _unit(v[R2])
        v[ST] -= lb * 0.12 * _unit(v[R2])
        v[SPIKE] = pace * 1.2 * _U["spike"]
    # Right bundle branch block: late rightward-anterior R' (rsR' in V1, slurred S in I and V6).
    if rbbb > 0:
        v[RP] = (0.25 + 0.6 * rbbb) * _U["rp"]
        v[T] -= 0.15 * rbbb * _U["z"]
    v[[Q, R1, R2, S]] *= 1 - 0.15 * ivcd
    # Infarction: initial forces point away from the dead wall (deep, wide Q), R lost towards it,
    # T inverted there; acute injury: ST elevation (and hyperacute T) towards the wall.
    for key, st in e.items():
        kind, _, terr = key.partition(":")
        u = TERRITORIES.get(terr)
        if u is None:
            continue
        if kind == "q":
            v[Q] -= (0.3 + 0.5 * st) * u
            sd[Q] *= 1 + 0.6 * st
            v[[R1, R2]] -= 0.7 * st * np.maximum(v[[R1, R2]] @ u, 0.0)[:, None] * u
            v[T] -= 0.3 * st * u
        elif kind == "ste":
            v[ST] += (0.1 + 0.25 * st) * u
            v[T] += 0.2 * st * u
        elif kind == "std":  # ischaemia: ST depression in the territory
            v[ST] -= (0.05 + 0.15 * st) * u
        elif kind == "tinv":  # T flattened / inverted in the territory
            v[T] -= (0.1 + 0.45 * st) * u
    v[T] *= 1 - 1.4 * tflat  # diffuse T flattening / inversion
    qt_extra = 0.09 * (w - s.qrs_width) / 0.75
    return c, sd, v, qt_extra


def _rotation(rot_deg: tuple[float, float]) -> np.ndarray:
    """Rotation matrix (3, 3): about z (frontal plane) then about y (horizontal plane)."""
    a, b = np.radians(rot_deg)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    return ry @ rz


def qrs_axis_deg(s: WaveSpec) -> float:
    """Frontal-plane axis (degrees) of the main QRS vector after the patient rotation."""
    _, _, v, _ = _template(s)
    m = _rotation(s.rot_deg) @ (v[Q] + v[R1] + v[R2] + v[S])
    return float(np.degrees(np.arctan2(m[1], m[0])))


def beat_times(s: WaveSpec, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """R-peak times (J,) in s covering the record with margins, and each beat's preceding RR (J,)."""
    rr0 = 60.0 / s.hr
    n = int(14.0 / max(0.6 * rr0, 0.25)) + 4
    k = np.arange(n)
    if s.rhythm == "AFIB":  # irregularly irregular
        rr = rr0 * np.exp(rng.normal(0.0, s.rr_var, n) - s.rr_var**2 / 2)
        rr = np.maximum(rr, 0.28)
    elif s.rhythm in ("AFLT", "PACE"):
        rr = rr0 * (1 + rng.normal(0.0, 0.002, n))
    else:  # sinus: respiratory modulation, jitter and a slow drift
        f_resp, ph = rng.uniform(0.15, 0.35), rng.uniform(0, 2 * np.pi)
        drift = rng.normal(0.0, 0.01) * k / n
        rr = rr0 * (1 + s.rr_var * np.sin(2 * np.pi * f_resp * k * rr0 + ph) + rng.normal(0, 0.008, n) + drift)
    r = -1.5 - rng.uniform(0, rr0) + np.cumsum(rr)
    prev = np.concatenate([[rr[0]], rr[:-1]])
    keep = (r > -1.2) & (r < DURATION_S + 1.2)
    return r[keep], prev[keep]


def _bumps(s: WaveSpec, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every Gaussian bump of one record: centres (M,) s, sds (M,) s, vectors (M, 3) mV in heart coordinates."""
    c, sd, v, qt_extra = _template(s)
    r, rr_prev = beat_times(s, rng)
    j = len(r)
    resp = 1 + 0.04 * np.sin(2 * np.pi * rng.uniform(0.15, 0.35) * r + rng.uniform(0, 2 * np.pi))
    scale = resp * (1 + rng.normal(0, 0.02, j))  # (J,) beat-to-beat amplitude
    qt = s.qtc * np.sqrt(np.clip(rr_prev, 0.3, 1.6)) + qt_extra
    t_sd = 0.045 * np.clip(rr_prev, 0.4, 1.4) ** 0.3
    cen = np.broadcast_to(c, (j, _K)).copy()  # (J, K)
    sds = np.broadcast_to(sd, (j, _K)).copy()
    cen[:, T] = qt - 2.2 * t_sd
    sds[:, T] = t_sd
    cen[:, ST] = (0.03 + cen[:, T]) / 2  # a broad bump bridging the J point and the T wave
    sds[:, ST] = np.maximum(cen[:, T] - 0.03, 0.05) / 3
    amp = v[None] * scale[:, None, None]  # (J, K, 3)
    if s.rhythm in ("AFIB", "AFLT"):
        amp[:, [P, P2]] = 0.0
    pvc = [k for k in s.pvc_beats if 1 <= k < j]
    pv = r[pvc] - 0.4 * rr_prev[pvc]  # premature ventricular beats replace sinus beats k
    amp[pvc, Q:] = 0.0  # the sinus P still fires, its QRS-T is blocked
    # Ventricular ectopy: two broad bizarre QRS lobes and a discordant T, no P.
    pc = (pv[:, None] + np.array([0.0, 0.045, 0.32])).ravel()  # (3 * n_pvc,)
    psd = np.tile([0.028, 0.03, 0.06], len(pv))
    pa = np.tile(np.array([[-1.0, 0.6, 0.8], [0.9, 0.5, -0.6], [0.15, -0.35, -0.4]]), (len(pv), 1))
    cen = np.concatenate([(cen + r[:, None]).ravel(), pc])  # (M,)
    sds = np.concatenate([sds.ravel(), psd])
    amp = np.concatenate([amp.reshape(-1, 3), pa * scale.mean()])
    live = np.abs(amp).sum(axis=1) > 0
    return cen[live], sds[live], amp[live]


def _atrial(s: WaveSpec, t: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
    """Continuous atrial activity (3, T) for AFIB (fibrillatory f waves) and AFLT (flutter waves), else None."""
    if s.rhythm == "AFIB":  # 5-8 Hz with wandering frequency and amplitude
        f0, fm, ph = rng.uniform(5.0, 8.0), rng.uniform(0.05, 0.2), rng.uniform(0, 2 * np.pi, 3)
        a0 = rng.uniform(0.02, 0.1)
        phase = 2 * np.pi * f0 * t + 0.06 * f0 / fm * np.sin(2 * np.pi * fm * t + ph[0]) + ph[1]
        return np.outer(_U["fib"], a0 * (1 + 0.4 * np.sin(0.7 * t + ph[2])) * np.sin(phase))
    if s.rhythm == "AFLT":  # sawtooth, negative in the inferior leads; 2:1 or 4:1 conduction
        ff, ph = s.hr / 60 * (2 if s.hr > 100 else 4), rng.uniform(0, 1)
        return np.outer(_U["flutter"], rng.uniform(0.1, 0.25) * (2 * ((ff * t + ph) % 1.0) - 1))
    return None


def _accumulate(cen: np.ndarray, sds: np.ndarray, amp: np.ndarray, rec: np.ndarray, n_rec: int, n: int,
                fs: int) -> np.ndarray:
    """Sum of windowed Gaussian bumps of many records: (3, n_rec * n); bump m belongs to record rec[m]."""
    out = np.zeros((3, n_rec * n))
    for narrow in (sds <= 0.03, sds > 0.03):  # two window sizes: QRS-like and P/T/ST-like bumps
        if not narrow.any():
            continue
        c, sd, a, r = cen[narrow], sds[narrow], amp[narrow], rec[narrow]
        half = int(np.ceil(4.5 * sd.max() * fs))
        idx = np.rint(c * fs).astype(np.int64)[:, None] + np.arange(-half, half + 1)  # (M, W)
        g = np.exp(-0.5 * ((idx / fs - c[:, None]) / sd[:, None]) ** 2)  # (M, W)
        ok = (idx >= 0) & (idx < n)
        flat = (r[:, None] * n + idx)[ok]
        for d in range(3):
            out[d] += np.bincount(flat, weights=(g * a[:, d, None])[ok], minlength=n_rec * n)
    return out


def _noise(s: WaveSpec, t: np.ndarray, fs: int, seed: tuple[int, ...]) -> np.ndarray:
    """Noise of the 8 independent leads (8, T): white, baseline wander, muscle burst, powerline.

    Wander and the burst's place come from a rate-independent stream, so 100 Hz and 500 Hz share them;
    only the white and burst samples (and the 50 Hz hum, at 500 Hz) differ between rates.
    """
    shared, own = np.random.default_rng([*seed, 1]), np.random.default_rng([*seed, fs])
    n = len(t)
    out = own.standard_normal((8, n), dtype=np.float32) * (s.noise_sd * shared.uniform(0.7, 1.3, (8, 1)))
    # Baseline wander: two slow sinusoids per lead (0.05-0.5 Hz), drawn on a 10 Hz grid and interpolated.
    tc = np.arange(0.0, DURATION_S + 0.2, 0.1)  # (C,)
    f, amp = shared.uniform(0.05, 0.5, (8, 2, 1)), shared.uniform(0.3, 1.0, (8, 2, 1))
    coarse = s.wander_mv * (amp * np.sin(2 * np.pi * f * tc + shared.uniform(0, 6.3, (8, 2, 1)))).sum(1)  # (8, C)
    pos = t * 10.0
    i0 = pos.astype(np.int64)
    frac = pos - i0
    out += coarse[:, i0] * (1 - frac) + coarse[:, i0 + 1] * frac
    if s.burst:  # muscle artefact in some leads for 0.5-2 s
        t0, dur, sd = shared.uniform(0, DURATION_S - 0.5), shared.uniform(0.5, 2.0), shared.uniform(0.05, 0.2)
        win = np.clip(1 - ((t - t0 - dur / 2) / (dur / 2)) ** 2, 0, None)
        leads = shared.random(8) < 0.6
        out[leads] += own.normal(0, sd, (leads.sum(), n)) * win
    if s.powerline_mv > 0 and fs >= 250:  # at 100 Hz the (virtual) anti-alias filter removed it
        out += s.powerline_mv * own.uniform(0.5, 1.5, (8, 1)) * np.sin(2 * np.pi * 50.0 * t + own.uniform(0, 6.3))
    return out


def synthesize_batch(specs: list[WaveSpec], fs: int, seeds: list[tuple[int, ...]]) -> np.ndarray:
    """Digital 12-lead records (R, T, 12) int16 in µV (1000 per mV) at fs Hz; record r depends only on seeds[r]."""
    n_rec, n = len(specs), int(DURATION_S * fs)
    t = np.arange(n) / fs  # (T,)
    # The heart draws from its own stream, independent of fs: 100 Hz and 500 Hz show the same beats.
    hearts = [np.random.default_rng([*seed, 0]) for seed in seeds]
    bumps = [_bumps(s, rng) for s, rng in zip(specs, hearts)]
    rec = np.repeat(np.arange(n_rec), [len(b[0]) for b in bumps])
    dip = _accumulate(*(np.concatenate(parts) for parts in zip(*bumps)), rec, n_rec, n, fs)
    dip = dip.reshape(3, n_rec, n).transpose(1, 0, 2)  # (R, 3, T)
    for r, (s, rng) in enumerate(zip(specs, hearts)):
        atrial = _atrial(s, t, rng)
        if atrial is not None:
            dip[r] += atrial
    leads = np.stack([s.gain * _LEAD_VECS @ _rotation(s.rot_deg) for s in specs])  # (R, 8, 3)
    x8 = np.einsum("rld,rdt->rlt", leads, dip)  # (R, 8, T)
    x8 += np.stack([_noise(s, t, fs, seed) for s, seed in zip(specs, seeds)])
    d = np.rint(np.clip(x8 * 1000.0, -30000, 30000))  # µV; -32768 is WFDB's missing-sample code
    i, ii = d[:, 0], d[:, 1]
    limb = np.stack([ii - i, np.rint(-(i + ii) / 2), np.rint(i - ii / 2), np.rint(ii - i / 2)], axis=1)
    return np.concatenate([d[:, :2], limb, d[:, 2:]], axis=1).transpose(0, 2, 1).astype(np.int16)  # (R, T, 12)


def synthesize(s: WaveSpec, fs: int, seed: tuple[int, ...]) -> np.ndarray:
    """One digital 12-lead record (T, 12) int16 in µV at fs Hz; deterministic for seed."""
    return synthesize_batch([s], fs, [seed])[0]
