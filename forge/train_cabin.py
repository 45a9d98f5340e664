"""Train, evaluate and ship the default cabin model (issue 4): `models/autoneural-cabin`.

One command, fixed seed, CPU:

    .venv-forge/bin/python -m forge.train_cabin --out models/autoneural-cabin

1. Renders the data with the project's scene renderer (`autoneural-scenes`, the single source of
   truth): a training set, a held-out set (another seed) and a shifted set (unseen colours, harsher
   light, stronger noise), into `--data` (a cache; re-used when the same sets are already there).
2. Trains a small AutoNeural (MobileNetV5-style encoder + MSFA, MLP connector, LFM2-style hybrid
   conv/attention decoder, byte-level BPE) to answer the 8 default probes with their exact answer
   strings and to write the renderer's one-sentence description.
3. Evaluates in PyTorch (per-probe accuracy, description attribute accuracy), exports the bundle with
   forge (fp32 + w8a16 QDQ + QNN v68 context binaries, golden outputs on rendered scenes), evaluates
   the exported fp32 and w8a16 graphs on ONNX Runtime, and writes `eval.json` + `MODEL.md`.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .config import DecoderConfig, ModelConfig, TextConfig, VisionConfig
from .model import AutoNeural, save_weights
from .probes import DEFAULT_PROBES
from .scenes import probe_answers, read_scenes
from .tokenizer import answer_ids, base_corpus, render_prompt, train_tokenizer

ROOT = Path(__file__).resolve().parent.parent

# Free questions the model answers with the renderer's description sentence.
DESCRIBE_QUESTIONS = ("Describe the driver.", "Describe the cabin.", "What is the driver doing?")
# Forge's golden file asks this one too; answered yes/no (eyes open on the road, no phone).
ATTENTION_QUESTION = "Is the driver paying attention to the road?"

CABIN_STAGES = (
    ("er_r1_k3_s2_e4_c24",),
    ("uir_r1_a3_k5_s2_e4_c40", "uir_r1_a5_k0_s1_e3_c40"),
    ("uir_r1_a5_k5_s2_e4_c64", "uir_r1_a0_k0_s1_e2_c64", "mqa_r1_k3_h2_v2_s1_d32_c64", "uir_r1_a0_k0_s1_e2_c64"),
    ("uir_r1_a5_k5_s2_e3_c96", "mqa_r1_k3_h4_s1_d32_c96", "uir_r1_a0_k0_s1_e2_c96"),
)


def cabin_config(image_size: int = 128) -> ModelConfig:
    return ModelConfig(
        name="autoneural-cabin",
        description="AutoNeural-architecture cabin model trained on the project's synthetic cabin scenes "
        "(MobileNetV5-style encoder + MSFA, MLP connector, LFM2-style hybrid decoder); see MODEL.md.",
        vision=VisionConfig(image_size=image_size, stem_channels=16, stages=CABIN_STAGES, msfa_channels=96, grid=4,
                            layer_scale_init=0.1),
        decoder=DecoderConfig(
            vocab_size=512,
            hidden=128,
            intermediate=256,
            layer_types=("conv", "full_attention", "conv", "full_attention"),
            num_heads=4,
            num_kv_heads=2,
            head_dim=32,
            prescaled_norm=True,  # image tokens ~100, text tokens ~0.05: see forge.lfm2.RMSNorm
        ),
        text=TextConfig(system_prompt="Driver camera."),
        kv_capacity=128,
        prefill_chunk=16,
        seed=4,
    )


# --- data ---------------------------------------------------------------------------------------


def render_set(out: Path, count: int, seed: int, size: int, shifted: bool, jobs: int, log) -> Path:
    """Renders a contract-2 set with the Rust renderer unless the same one is already there."""
    stamp = {"count": count, "seed": seed, "size": size, "shifted": shifted}
    stamp_file = out / "stamp.json"
    if stamp_file.is_file() and json.loads(stamp_file.read_text()) == stamp and (out / "labels.jsonl").is_file():
        return out
    cmd = ["cargo", "run", "--release", "-q", "-p", "autoneural-scenes", "--bin", "autoneural-scenes", "--",
           "render", "--count", str(count), "--size", str(size), "--seed", str(seed), "--out", str(out),
           "--jobs", str(jobs)] + (["--shifted"] if shifted else [])
    log(" ".join(cmd))
    subprocess.run(cmd, cwd=ROOT, check=True)
    stamp_file.write_text(json.dumps(stamp))
    return out


def load_set(directory: Path) -> tuple[np.ndarray, list[dict]]:
    scenes = read_scenes(directory)
    images = np.stack([np.asarray(s.load()) for s in scenes])  # [N,S,S,3] uint8 (grey -> RGB)
    return images, [s.labels for s in scenes]


def to_pixels(batch_u8: np.ndarray) -> torch.Tensor:
    """uint8 [B,S,S,3] -> normalised float [B,3,S,S] (mean 0.5, std 0.5, as in the manifest)."""
    x = torch.from_numpy(batch_u8).permute(0, 3, 1, 2).float()
    return (x / 255.0 - 0.5) / 0.5


def augment(batch_u8: np.ndarray, gen: torch.Generator) -> torch.Tensor:
    """Training-time camera and colour variation beyond what the training renders show, so that the
    shifted set (unseen palettes, harsher light, stronger noise and blur) is not out of reach: for
    colour frames a random channel order and per-channel gain; for every frame exposure, a linear
    light gradient, gamma, optics blur and sensor noise. uint8 [B,S,S,3] -> normalised [B,3,S,S]."""
    x = torch.from_numpy(batch_u8).permute(0, 3, 1, 2).float() / 255.0
    b, _, s, _ = x.shape

    def u(lo, hi, *shape):
        return lo + (hi - lo) * torch.rand(*shape, generator=gen)

    colour = (x[:, 0] - x[:, 1]).abs().amax((1, 2)) + (x[:, 1] - x[:, 2]).abs().amax((1, 2)) > 0.02
    perm = torch.stack([torch.randperm(3, generator=gen) for _ in range(b)])
    shuffled = torch.gather(x, 1, perm[:, :, None, None].expand(-1, -1, s, s))
    swap = colour & (torch.rand(b, generator=gen) < 0.5)
    x = torch.where(swap[:, None, None, None], shuffled, x)
    gain = torch.where(colour[:, None], u(0.75, 1.25, b, 3), torch.ones(b, 3))
    x = x * gain[:, :, None, None]
    ramp = torch.linspace(-0.5, 0.5, s)
    angle = u(0.0, 2 * math.pi, b)
    light = (ramp[None, None, :] * angle.cos()[:, None, None] + ramp[None, :, None] * angle.sin()[:, None, None])
    x = x * (u(0.6, 1.4, b)[:, None, None] * (1 + u(0.0, 0.9, b)[:, None, None] * light)).clamp_min(0.05)[:, None]
    x = x.clamp(0, 1) ** u(0.75, 1.35, b)[:, None, None, None]
    sigma = u(0.3, 1.3, b)
    k = torch.exp(-(torch.arange(-2, 3).float()[None] ** 2) / (2 * sigma[:, None] ** 2))
    k = k / k.sum(1, keepdim=True)
    blurred = F.conv2d(F.pad(x.reshape(1, b * 3, s, s), (2, 2, 0, 0), mode="replicate"),
                       k.repeat_interleave(3, 0)[:, None, None, :], groups=b * 3)
    blurred = F.conv2d(F.pad(blurred, (0, 0, 2, 2), mode="replicate"), k.repeat_interleave(3, 0)[:, None, :, None],
                       groups=b * 3).reshape(b, 3, s, s)
    x = torch.where((torch.rand(b, generator=gen) < 0.4)[:, None, None, None], blurred, x)
    noise = torch.randn(b, 1, s, s, generator=gen).expand(-1, 3, -1, -1)
    noise = torch.where(colour[:, None, None, None], torch.randn(b, 3, s, s, generator=gen), noise)
    x = (x + noise * u(0.0, 0.08, b)[:, None, None, None]).clamp(0, 1)
    return (x - 0.5) / 0.5


def attentive(labels: dict) -> bool:
    return (labels["face"] == "visible" and labels["eyes"] == "open" and labels["gaze"] == "road"
            and labels["phone"] == "none")


# --- tokens -------------------------------------------------------------------------------------


class Tasks:
    """Every question the model is trained on, tokenized once. A sequence is the shared prefix
    (system turn + image) followed by `rest` = question part + answer + end of turn."""

    def __init__(self, tok, cfg: ModelConfig):
        self.tok, self.cfg = tok, cfg
        t = cfg.text
        self.eos = tok.token_to_id(t.eos_token)
        self.pad = tok.token_to_id(t.pad_token)
        self.image_id = tok.token_to_id(t.image_token)
        first = render_prompt(tok, t, DEFAULT_PROBES[0].question)
        self.prefix = first.prefix_ids  # ends with the image token
        self.question_ids = {}
        for q in [p.question for p in DEFAULT_PROBES] + list(DESCRIBE_QUESTIONS) + [ATTENTION_QUESTION]:
            p = render_prompt(tok, t, q)
            assert p.prefix_ids == self.prefix
            self.question_ids[q] = p.question_ids
        self._answers: dict[str, list[int]] = {}

    def answer(self, text: str) -> list[int]:
        if text not in self._answers:
            self._answers[text] = answer_ids(self.tok, text)
        return self._answers[text]

    def sequence(self, question: str, answer: str) -> tuple[list[int], int]:
        """(rest ids, index in rest where the answer starts)."""
        q = self.question_ids[question]
        return q + self.answer(answer) + [self.eos], len(q)


def sample_tasks(labels: dict, rng: np.random.Generator, probes_per_image: int) -> list[tuple[str, str]]:
    answers = probe_answers(labels)
    chosen = rng.choice(len(DEFAULT_PROBES), size=probes_per_image, replace=False)
    out = [(DEFAULT_PROBES[i].question, answers[DEFAULT_PROBES[i].id]) for i in chosen]
    r = rng.random()
    if r < 0.3:
        out.append((DESCRIBE_QUESTIONS[rng.integers(len(DESCRIBE_QUESTIONS))], labels["description"]))
    elif r < 0.4:
        out.append((ATTENTION_QUESTION, "yes" if attentive(labels) else "no"))
    return out


def question_rows(tasks: Tasks, batch_labels: list[dict], rng: np.random.Generator, probes_per_image: int):
    """The training sequences of a batch: (rest ids, answer starts, index of each row's image)."""
    rows, starts, owner = [], [], []
    for b, labels in enumerate(batch_labels):
        for q, a in sample_tasks(labels, rng, probes_per_image):
            r, s = tasks.sequence(q, a)
            rows.append(r)
            starts.append(s)
            owner.append(b)
    return rows, starts, owner


# --- model pieces -------------------------------------------------------------------------------


class AuxHeads(torch.nn.Module):
    """Training-only linear read-outs of every probe from the image tokens. They give the encoder a
    dense signal for all 8 attributes on every image (the decoder sees only a few questions per image
    per step), which is what makes training fit the CPU budget; they are not part of the bundle."""

    def __init__(self, tokens: int, hidden: int):
        super().__init__()
        self.heads = torch.nn.ModuleDict({p.id: torch.nn.Linear(tokens * hidden, len(p.answers)) for p in DEFAULT_PROBES})

    def logits(self, image_embeds: torch.Tensor) -> dict[str, torch.Tensor]:
        f = F.layer_norm(image_embeds.flatten(1), (image_embeds[0].numel(),))
        return {k: h(f) for k, h in self.heads.items()}

    def loss(self, image_embeds: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = self.logits(image_embeds)
        return sum(F.cross_entropy(logits[k], targets[k]) for k in self.heads) / len(self.heads)


def answer_indices(labels: list[dict]) -> list[dict[str, int]]:
    return [{p.id: p.answers.index(probe_answers(l)[p.id]) for p in DEFAULT_PROBES} for l in labels]


@torch.no_grad()
def aux_accuracy(model, aux: AuxHeads, images: np.ndarray, labels: list[dict], chunk: int = 100) -> dict[str, float]:
    """Per-probe accuracy of the training-only read-outs: how far the encoder has got, cheaply."""
    truth = answer_indices(labels)
    right = {p.id: 0 for p in DEFAULT_PROBES}
    for c in range(0, len(images), chunk):
        logits = aux.logits(model.image_embeds(to_pixels(images[c : c + chunk])))
        for k, lg in logits.items():
            right[k] += sum(int(a) == t[k] for a, t in zip(lg.argmax(-1), truth[c : c + chunk]))
    return {k: round(100 * v / len(images), 1) for k, v in right.items()}


def sequence_logits(model, image_embeds: torch.Tensor, prefix_emb: torch.Tensor, rest: torch.Tensor) -> torch.Tensor:
    """Logits for the `rest` tokens of M sequences sharing the prefix text.

    image_embeds [M,N,H] (one row per sequence), prefix_emb [P-1,H] (prefix without the image token),
    rest [M,R] ids -> logits [M,R,V] where row j predicts rest token j (so row 0 predicts the first
    question token from the last image embedding)."""
    m = rest.shape[0]
    x = torch.cat([prefix_emb[None].expand(m, -1, -1), image_embeds, model.language.embed_tokens(rest)], dim=1)
    logits = model.language(x)
    start = prefix_emb.shape[0] + image_embeds.shape[1] - 1
    return logits[:, start : start + rest.shape[1]]


def pad_batch(rows: list[list[int]], pad: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [pad] * (width - len(r)) for r in rows], dtype=torch.long)


class Progress:
    """One optimiser step (clipped gradients, then the schedule), a running loss, and a log line
    every 50 steps."""

    def __init__(self, name: str, steps: int, opt, sched, log):
        self.name, self.steps, self.opt, self.sched, self.log = name, steps, opt, sched, log
        self.t0, self.running, self.history = time.time(), None, []

    def step(self, step: int, loss: torch.Tensor, params) -> None:
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        self.opt.step()
        self.sched.step()
        value = loss.item()
        self.running = value if self.running is None else 0.95 * self.running + 0.05 * value
        if step % 50 == 0 or step == self.steps - 1:
            el = time.time() - self.t0
            self.log(f"{self.name} {step}/{self.steps} loss {self.running:.4f} lr {self.sched.get_last_lr()[0]:.2e} "
                     f"{el:.0f} s ({el / (step + 1):.2f} s/step)")
            self.history.append({"step": step, "loss": round(self.running, 4), "elapsed_s": round(el, 1)})


def answer_loss(model, tasks: Tasks, img: torch.Tensor, rows: list[list[int]], starts: list[int],
                prefix_emb: torch.Tensor) -> torch.Tensor:
    """Mean over sequences of the mean cross-entropy of each sequence's answer tokens and end of turn
    (one mean per sequence, so 1-token probe answers weigh as much as a 30-token description).
    img [M,N,H]: the image embeddings of each sequence's image."""
    rest = pad_batch(rows, tasks.pad)
    target = torch.full_like(rest, -100)
    for k, (r, s) in enumerate(zip(rows, starts)):
        target[k, s : len(r)] = rest[k, s : len(r)]
    logits = sequence_logits(model, img, prefix_emb, rest)
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100,
                         reduction="none").reshape(target.shape)
    mask = (target != -100).float()
    return ((ce * mask).sum(1) / mask.sum(1)).mean()


def train(model, tasks: Tasks, images: np.ndarray, labels: list[dict], steps: int, batch: int, lr: float,
          probes_per_image: int, seed: int, log, watch: dict | None = None, watch_every: int = 500) -> dict:
    """`watch`: name -> (images, labels) whose read-out accuracy is logged every `watch_every` steps."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    aux = AuxHeads(model.cfg.vision.tokens, model.cfg.decoder.hidden)
    answer_index = answer_indices(labels)
    named = list(model.named_parameters()) + list(aux.named_parameters())
    decay = [p for n, p in named if p.dim() >= 2]
    other = [p for n, p in named if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.02}, {"params": other, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.98))
    warmup = max(1, steps // 25)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))
    prefix = torch.tensor(tasks.prefix[:-1])
    n = len(labels)
    order = rng.permutation(n)
    cursor = 0
    progress = Progress("step", steps, opt, sched, log)
    read_outs = []
    for step in range(steps):
        if cursor + batch > n:
            order, cursor = rng.permutation(n), 0
        idx = order[cursor : cursor + batch]
        cursor += batch
        rows, starts, owner = question_rows(tasks, [labels[i] for i in idx], rng, probes_per_image)
        img = model.image_embeds(augment(images[idx], gen))
        aux_targets = {p.id: torch.tensor([answer_index[i][p.id] for i in idx]) for p in DEFAULT_PROBES}
        loss = (answer_loss(model, tasks, img[torch.tensor(owner)], rows, starts, model.language.embed_tokens(prefix))
                + aux.loss(img, aux_targets))
        progress.step(step, loss, model.parameters())
        if watch and (step + 1) % watch_every == 0:
            model.eval()
            for name, (ims, lab) in watch.items():
                acc = aux_accuracy(model, aux, ims, lab)
                log(f"  read-out {name} at step {step + 1}: {json.dumps(acc)}")
                read_outs.append({"step": step + 1, "set": name, "per_probe_pct": acc})
            model.train()
    model.eval()
    return {"steps": steps, "batch_images": batch, "seconds": round(time.time() - progress.t0, 1),
            "history": progress.history,
            "read_outs": read_outs}


# --- evaluation ---------------------------------------------------------------------------------


@torch.no_grad()
def probe_predictions(model, tasks: Tasks, images: np.ndarray, chunk: int = 32) -> list[dict[str, str]]:
    """Per image, each probe's answer chosen as the runtime does: the summed log-probability of each
    answer's tokens after the question (no end token), argmax."""
    prefix_emb = model.language.embed_tokens(torch.tensor(tasks.prefix[:-1]))
    seqs = []  # (probe id, answer, rest, answer start)
    for p in DEFAULT_PROBES:
        for a in p.answers:
            q = tasks.question_ids[p.question]
            seqs.append((p.id, a, q + tasks.answer(a), len(q)))
    rest = pad_batch([s[2] for s in seqs], tasks.pad)
    out = []
    for c in range(0, len(images), chunk):
        img = model.image_embeds(to_pixels(images[c : c + chunk]))
        b = img.shape[0]
        emb = img.repeat_interleave(len(seqs), 0)
        logits = sequence_logits(model, emb, prefix_emb, rest.repeat(b, 1))
        logp = torch.log_softmax(logits.float(), -1)
        for i in range(b):
            scores: dict[str, dict[str, float]] = {}
            for k, (pid, a, r, s) in enumerate(seqs):
                row = logp[i * len(seqs) + k]
                scores.setdefault(pid, {})[a] = float(sum(row[j, r[j]] for j in range(s, len(r))))
            out.append({pid: max(sc, key=sc.get) for pid, sc in scores.items()})
    return out


@torch.no_grad()
def describe(model, tasks: Tasks, images: np.ndarray, max_new: int = 48, chunk: int = 32) -> list[str]:
    """Greedy descriptions (question "Describe the driver.")."""
    prefix_emb = model.language.embed_tokens(torch.tensor(tasks.prefix[:-1]))
    q = tasks.question_ids[DESCRIBE_QUESTIONS[0]]
    texts = []
    for c in range(0, len(images), chunk):
        img = model.image_embeds(to_pixels(images[c : c + chunk]))
        b = img.shape[0]
        rest = torch.tensor([q] * b)
        done = torch.zeros(b, dtype=torch.bool)
        gen = [[] for _ in range(b)]
        for _ in range(max_new):
            # The next token is predicted at the last position (sequence_logits' rows stop one short).
            x = torch.cat([prefix_emb[None].expand(b, -1, -1), img, model.language.embed_tokens(rest)], dim=1)
            nxt = model.language(x)[:, -1].argmax(-1)
            for i in range(b):
                if not done[i]:
                    if int(nxt[i]) == tasks.eos:
                        done[i] = True
                    else:
                        gen[i].append(int(nxt[i]))
            if bool(done.all()):
                break
            rest = torch.cat([rest, nxt[:, None]], 1)
        texts += [tasks.tok.decode(g) for g in gen]
    return texts


_GAZE = {"at the road": "road", "at the left mirror": "left mirror", "at the right mirror": "right mirror",
         "down": "down", "at the console": "console"}


def parse_description(text: str) -> dict | None:
    """Attributes back from a description sentence (the renderer's grammar); None if it does not parse."""
    text = text.strip()
    m = re.fullmatch(r"The driver's seat is empty, with (a|no) passenger\.", text)
    if m:
        return {"face": "absent", "passenger": m[1] == "a"}
    hands = r"with (no hands|one hand|both hands) on the wheel, (belted|unbelted), and (a|no) passenger\."
    m = re.fullmatch(r"The driver's face is hidden, " + hands, text)
    if m:
        return {"face": "occluded", "hands_on_wheel": ["no hands", "one hand", "both hands"].index(m[1]),
                "seat_belt": m[2] == "belted", "passenger": m[3] == "a"}
    m = re.fullmatch(r"The driver looks (at the road|at the left mirror|at the right mirror|down|at the console)"
                     r"( with eyes closed)?(, yawning)?(, in sunglasses)?(, holding a phone|, phone at the ear)?, "
                     + hands, text)
    if m:
        return {"face": "visible", "gaze": _GAZE[m[1]], "eyes": "closed" if m[2] else "open",
                "yawning": bool(m[3]), "sunglasses": bool(m[4]),
                "phone": {None: "none", ", holding a phone": "in hand", ", phone at the ear": "at ear"}[m[5]],
                "hands_on_wheel": ["no hands", "one hand", "both hands"].index(m[6]),
                "seat_belt": m[7] == "belted", "passenger": m[8] == "a"}
    return None


DESCRIPTION_ATTRIBUTES = ("face", "gaze", "eyes", "yawning", "sunglasses", "phone", "hands_on_wheel", "seat_belt",
                          "passenger")


def description_scores(texts: list[str], labels: list[dict]) -> dict:
    """Exact-sentence rate, parse rate, and per-attribute accuracy over the attributes the truth
    sentence mentions (an unparsable sentence gets every attribute wrong)."""
    exact = sum(t.strip() == l["description"] for t, l in zip(texts, labels))
    parsed = 0
    right = {a: 0 for a in DESCRIPTION_ATTRIBUTES}
    total = {a: 0 for a in DESCRIPTION_ATTRIBUTES}
    for t, l in zip(texts, labels):
        truth = parse_description(l["description"])
        got = parse_description(t)
        parsed += got is not None
        for a, v in truth.items():
            total[a] += 1
            right[a] += got is not None and got.get(a) == v
    per = {a: round(100 * right[a] / total[a], 2) for a in DESCRIPTION_ATTRIBUTES if total[a]}
    return {"n": len(texts), "exact_pct": round(100 * exact / len(texts), 2), "parsed_pct": round(100 * parsed / len(texts), 2),
            "attribute_pct": round(100 * sum(right.values()) / max(1, sum(total.values())), 2), "per_attribute_pct": per}


def probe_scores(preds: list[dict[str, str]], labels: list[dict]) -> dict:
    per = {}
    for p in DEFAULT_PROBES:
        ok = sum(pr[p.id] == probe_answers(l)[p.id] for pr, l in zip(preds, labels))
        per[p.id] = round(100 * ok / len(labels), 2)
    return {"n": len(labels), "per_probe_pct": per, "mean_pct": round(sum(per.values()) / len(per), 2),
            "min_pct": min(per.values())}


def bundle_probe_predictions(bundle: Path, variant: str, images: np.ndarray) -> tuple[list[dict[str, str]], float]:
    """The exported graphs on ONNX Runtime CPU (forge.runtime, the reference runtime). Returns the
    predictions and the mean seconds per frame for all 8 probes (vision + prefix + probes)."""
    from .images import pixel_values
    from .runtime import Runner

    r = Runner(bundle, variant, threads=2)
    img_cfg = r.image
    preds = []
    t0 = time.time()
    for im in images:
        pv = pixel_values(Image.fromarray(im), img_cfg["size"], img_cfg["mean"], img_cfg["std"])
        prefix = r.prefix_state(pv)
        probs = {p.id: r.probe(prefix, p.question, list(p.answers)) for p in DEFAULT_PROBES}
        preds.append({pid: max(pr, key=pr.get) for pid, pr in probs.items()})
    return preds, (time.time() - t0) / max(1, len(images))


def bundle_descriptions(bundle: Path, variant: str, images: np.ndarray, max_new: int = 48) -> list[str]:
    """Greedy "Describe the driver." on the exported graphs (forge.runtime, the reference runtime),
    stopping at the end of turn, as the daemon's Describe() does."""
    from .images import pixel_values
    from .runtime import Runner

    r = Runner(bundle, variant, threads=2)
    texts = []
    for im in images:
        pv = pixel_values(Image.fromarray(im), r.image["size"], r.image["mean"], r.image["std"])
        tokens, _ = r.generate(r.prefix_state(pv), DESCRIBE_QUESTIONS[0], max_new=max_new, stop=True)
        texts.append(r.tok.decode([t for t in tokens if t != r.eos_id]))
    return texts


# --- main ---------------------------------------------------------------------------------------


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m forge.train_cabin", description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "models/autoneural-cabin")
    ap.add_argument("--data", type=Path, default=ROOT / ".cache/cabin-scenes")
    ap.add_argument("--train-count", type=int, default=24000)
    ap.add_argument("--eval-count", type=int, default=1000)
    ap.add_argument("--pytorch-eval-count", type=int, default=300)
    ap.add_argument("--bundle-eval-count", type=int, default=150)
    ap.add_argument("--bundle-describe-count", type=int, default=40)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--probes-per-image", type=int, default=2)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=4)
    ap.add_argument("--watch-every", type=int, default=500, help="log read-out accuracy every N steps")
    ap.add_argument("--bench", type=int, default=0, help="only time this many training steps")
    ap.add_argument("--no-export", action="store_true")
    ap.add_argument("--from-weights", action="store_true",
                    help="skip training: evaluate and export the weights the last run saved in --data")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    log_lines: list[str] = []

    def log(msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        log_lines.append(line)

    t_start = time.time()
    cfg = cabin_config(args.size)
    sets = {
        "train": render_set(args.data / f"train-s1-{args.size}", args.train_count, 1, args.size, False, args.threads, log),
        "held_out": render_set(args.data / f"heldout-s2-{args.size}", args.eval_count, 2, args.size, False, args.threads, log),
        "shifted": render_set(args.data / f"shifted-s3-{args.size}", args.eval_count, 3, args.size, True, args.threads, log),
    }
    data = {k: load_set(v) for k, v in sets.items()}
    log(f"data: " + ", ".join(f"{k} {len(v[1])}" for k, v in data.items()) + f" ({time.time() - t_start:.0f} s)")

    descriptions = sorted({l["description"] for l in data["train"][1]})
    corpus = base_corpus(cfg.text) + list(DESCRIBE_QUESTIONS) + [ATTENTION_QUESTION, "yes", "no"] + descriptions
    tok = train_tokenizer(corpus, cfg.decoder.vocab_size, cfg.text)
    tasks = Tasks(tok, cfg)
    torch.manual_seed(args.seed)
    model = AutoNeural(cfg)  # PyTorch's default initialisation (build_model's random weights are for tests)
    with torch.no_grad():  # a unit-variance tied embedding would start with huge logits
        model.language.embed_tokens.weight.normal_(0.0, 0.02)
    params = sum(p.numel() for p in model.parameters())
    vision_params = sum(p.numel() for p in model.vision.parameters())
    log(f"model: {params / 1e6:.2f} M parameters (vision {vision_params / 1e6:.2f} M); "
        f"prefix {len(tasks.prefix)} tokens + {cfg.vision.tokens} image tokens; vocab {tok.get_vocab_size()}")

    images, labels = data["train"]
    weights = args.data / "autoneural-cabin.safetensors"
    report_file = args.data / "autoneural-cabin.train.json"
    if args.from_weights:
        # Evaluate and export the last training run's weights (e.g. after an interrupted export).
        from .model import load_weights

        model = load_weights(cfg, weights)
        train_rep = json.loads(report_file.read_text())
        log_lines[:0] = train_rep.pop("log", [])  # train.log tells the whole story
        log(f"loaded {weights} (trained {train_rep['steps']} steps in {train_rep['seconds']} s)")
    elif args.bench:
        rep = train(model, tasks, images, labels, args.bench, args.batch, args.lr, args.probes_per_image, args.seed, log)
        log(f"bench: {rep['seconds'] / args.bench:.2f} s/step")
        return
    else:
        watch = {k: (v[0][:300], v[1][:300]) for k, v in data.items() if k != "train"}
        train_rep = train(model, tasks, images, labels, args.steps, args.batch, args.lr, args.probes_per_image,
                          args.seed, log, watch, args.watch_every)
        log(f"trained {args.steps} steps in {train_rep['seconds']} s")
        args.data.mkdir(parents=True, exist_ok=True)
        save_weights(model, weights)  # to re-export without retraining (--from-weights)
        report_file.write_text(json.dumps(train_rep | {"lr": args.lr, "probes_per_image": args.probes_per_image,
                                                       "log": log_lines}))

    results = {"config": cfg.name, "parameters": params, "vision_parameters": vision_params,
               "data": {k: {"count": len(v[1]), "seed": s, "shifted": k == "shifted", "size": args.size}
                        for (k, v), s in zip(data.items(), (1, 2, 3))},
               "training": {"lr": args.lr, "probes_per_image": args.probes_per_image, "seed": args.seed,
                            "threads": args.threads}
               | {k: v for k, v in train_rep.items() if k not in ("history", "read_outs")}
               | {"final_loss": train_rep["history"][-1]["loss"],
                  "read_out_curve": train_rep.get("read_outs", [])},
               "pytorch": {}}
    for name in ("held_out", "shifted"):
        ims, lab = data[name]
        ims, lab = ims[: args.pytorch_eval_count], lab[: args.pytorch_eval_count]
        t = time.time()
        results["pytorch"][name] = {"probes": probe_scores(probe_predictions(model, tasks, ims), lab)}
        n_desc = min(150, len(lab))
        texts = describe(model, tasks, ims[:n_desc])
        results["pytorch"][name]["description"] = description_scores(texts, lab[:n_desc])
        results["pytorch"][name]["description"]["examples"] = [
            {"truth": l["description"], "model": t_} for t_, l in list(zip(texts, lab))[:3]]
        log(f"pytorch {name}: {json.dumps(results['pytorch'][name]['probes']['per_probe_pct'])} "
            f"desc attr {results['pytorch'][name]['description']['attribute_pct']} % ({time.time() - t:.0f} s)")
    if args.no_export:
        print(json.dumps(results, indent=1))
        return

    # Export with forge: calibration on rendered training scenes, golden cases on held-out ones.
    from . import bundle as bundle_mod

    held_images = data["held_out"][0]
    opts = bundle_mod.BuildOptions(
        quant=("w8a16",),
        calibration_images=[Image.fromarray(images[i]) for i in range(16)],
        held_out_images=[Image.fromarray(held_images[i]) for i in range(16, 20)],
        golden_images=[Image.fromarray(held_images[i]) for i in range(3)],
        calibration_questions=(DESCRIBE_QUESTIONS[0], ATTENTION_QUESTION) + DESCRIBE_QUESTIONS[1:],
        golden_cases=3,
        log=log,
    )
    t = time.time()
    rep = bundle_mod.bundle_from_state_dict(cfg, model.state_dict(), args.out, tok, opts)
    results["export"] = {k: rep[k] for k in ("export_s", "quantize_s", "qnn_s", "golden_s", "total_s", "bytes", "sqnr_db")
                         if k in rep}
    log(f"bundle: {rep['bytes'] / 1e6:.1f} MB in {time.time() - t:.0f} s, SQNR {rep.get('sqnr_db')}")

    # The exported graphs, as the daemon runs them (ONNX Runtime CPU), on the first images of each set.
    results["bundle"] = {}
    n = args.bundle_eval_count
    for variant in ("fp32", "w8a16"):
        for name in ("held_out", "shifted"):
            ims, lab = data[name]
            preds, per_frame = bundle_probe_predictions(args.out, variant, ims[:n])
            results["bundle"].setdefault(variant, {})[name] = probe_scores(preds, lab[:n]) | {
                "seconds_per_frame_8_probes": round(per_frame, 4)}
            log(f"bundle {variant} {name}: {json.dumps(results['bundle'][variant][name])}")
    # Descriptions on the exported fp32 graphs, as the daemon's Describe() makes them.
    n_desc = min(args.bundle_describe_count, n)
    ims, lab = data["held_out"]
    texts = bundle_descriptions(args.out, "fp32", ims[:n_desc])
    exact = sum(t.strip() == l["description"] for t, l in zip(texts, lab))
    results["bundle"]["fp32"]["held_out_description"] = description_scores(texts, lab[:n_desc])
    log(f"bundle fp32 held_out descriptions: {exact} of {n_desc} exact, "
        f"{results['bundle']['fp32']['held_out_description']['attribute_pct']} % of attributes")
    # What the Rust-side check reproduces: the fp32 bundle on the first held-out scenes.
    results["rust_check"] = {"variant": "fp32", "seed": 2, "count": n, "size": args.size, "variation": "train",
                             "per_probe_pct": results["bundle"]["fp32"]["held_out"]["per_probe_pct"],
                             "description": {"question": DESCRIBE_QUESTIONS[0], "count": n_desc,
                                             "max_tokens": 48, "exact": exact}}
    # With --from-weights: this run plus the training run that made the weights.
    results["total_s"] = round(time.time() - t_start + (train_rep["seconds"] if args.from_weights else 0.0), 1)
    (args.out / "eval.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.out / "train.log").write_text("\n".join(log_lines) + "\n")
    bundle_mod.save_manifest(args.out, bundle_mod.load_manifest(args.out), checksums=True)
    from .train_cabin_card import main as write_card

    write_card([str(args.out)])  # MODEL.md from eval.json, then the manifest's checksums again
    log(f"done in {results['total_s']} s")


if __name__ == "__main__":
    main()
