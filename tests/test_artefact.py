"""The quantized artefact: packed codes that round-trip, verified on load, refused when corrupt."""
import json
import os
import stat

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from dfqvit.api import load_quantized, quantize, real_images, save_quantized
from dfqvit.errors import CheckpointError
from dfqvit.export import _checksum, pack_codes, packed_size, unpack_codes
from dfqvit.quant.config import QuantConfig


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 8])
def test_packing_round_trips_codes_exactly(bits):
    codes = torch.randint(0, 2**bits, (37, 11), generator=torch.Generator().manual_seed(bits), dtype=torch.uint8)
    packed = pack_codes(codes, bits)
    assert packed.numel() == packed_size(codes.numel(), bits)
    assert torch.equal(unpack_codes(packed, bits, codes.numel()).reshape(codes.shape), codes)


@pytest.fixture(scope="module")
def artefact(tiny, tmp_path_factory):
    images, _ = real_images(tiny, None, 16)
    q, _ = quantize(tiny, images, QuantConfig(w_bits=4, a_bits=8), acm_every=2, progress=False)
    path = save_quantized(q, tiny, tmp_path_factory.mktemp("a") / "q.safetensors")
    return q, path


def _rewrite(src, dst, edit_state=None, edit_meta=None, rehash=False):
    state = load_file(str(src))
    with safe_open(str(src), framework="pt") as f:
        meta = json.loads(f.metadata()["dfqvit"])
    if edit_state:
        edit_state(state)
    if edit_meta:
        edit_meta(meta)
    if rehash:
        meta["sha256"] = _checksum(meta, state)
    save_file(state, str(dst), metadata={"dfqvit": json.dumps(meta)})
    return dst


def test_file_size_is_close_to_the_bit_packed_size_and_mode_follows_umask(artefact, tiny):
    q, path = artefact
    packed_bytes = q.weight_bits_total() / 8
    assert packed_bytes <= os.path.getsize(path) < 1.05 * packed_bytes + 16_000  # + the JSON header
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask


def test_flipped_code_bytes_are_refused(artefact, tmp_path):
    _, path = artefact

    def flip(state):
        key = next(k for k in state if k.endswith("weight_codes"))
        state[key][:64] ^= 0xFF

    bad = _rewrite(path, tmp_path / "flipped.safetensors", edit_state=flip)
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_quantized(bad)


def test_a_wrong_bit_width_is_refused_even_with_a_recomputed_checksum(artefact, tmp_path):
    _, path = artefact

    def two_bits(meta):
        meta["quant_config"]["w_bits"] = 2

    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_quantized(_rewrite(path, tmp_path / "w2.safetensors", edit_meta=two_bits))
    with pytest.raises(CheckpointError, match=r"codes of 2 bits need .*wrong bit width"):
        load_quantized(_rewrite(path, tmp_path / "w2h.safetensors", edit_meta=two_bits, rehash=True))


@pytest.mark.parametrize("edit,pattern", [
    (lambda m: m.update(model="vit_nonexistent_model"), "unknown model 'vit_nonexistent_model'"),
    (lambda m: m.update(model="deit_tiny_patch16_224", arch_kwargs={"img_size": 32, "patch_size": 4, "num_classes": 10}),
     "does not fit the model its metadata names"),
    (lambda m: m.pop("quant_config"), "lacks the field(s) quant_config"),
    (lambda m: m.update(format_version=7), "unsupported format"),
])
def test_inconsistent_metadata_is_refused_in_one_line(artefact, tmp_path, edit, pattern):
    _, path = artefact
    bad = _rewrite(path, tmp_path / "m.safetensors", edit_meta=edit, rehash=True)
    with pytest.raises(CheckpointError, match=pattern.replace("(", r"\(").replace(")", r"\)")):
        load_quantized(bad)


def test_version_1_artefacts_still_load_and_out_of_range_codes_are_refused(artefact, tmp_path, digits_heldout):
    q, _ = artefact
    # A version-1 file: one byte per code, no checksum (what dfqvit 0.1 wrote).
    state = {k: v.detach().contiguous() for k, v in q.state_dict().items()}
    for name, m in q.named_modules():
        if hasattr(m, "weight_quantizer") and hasattr(m, "inner"):
            state.pop(name + ".inner.weight")
            state[name + ".weight_codes"] = m.weight_quantizer.integer(m.inner.weight).to(torch.uint8).contiguous()
    meta = {"format": "dfqvit-quantized-v1", "model": "tiny-vit-digits", "arch_kwargs": {},
            "data_config": {"input_size": [3, 32, 32], "mean": [0.5] * 3, "std": [0.5] * 3},
            "quant_config": q.config.to_dict()}
    v1 = tmp_path / "v1.safetensors"
    save_file(state, str(v1), metadata={"dfqvit": json.dumps(meta)})
    q1, _, _ = load_quantized(v1)
    x = digits_heldout[0][:32]
    with torch.no_grad():
        assert torch.equal(q1(x), q(x))
    key = next(k for k in state if k.endswith("weight_codes") and "blocks" in k)
    state[key] = state[key].clone()
    state[key][0, 0] = 200  # above 2^4 - 1
    save_file(state, str(v1), metadata={"dfqvit": json.dumps(meta)})
    with pytest.raises(CheckpointError, match="above 2\\^4-1"):
        load_quantized(v1)


def test_cli_evaluate_refuses_a_corrupt_artefact_in_one_line(artefact, tmp_path, capsys):
    from dfqvit.cli import main

    _, path = artefact
    raw = bytearray(path.read_bytes())
    raw[-200:-136] = bytes(64)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(bytes(raw))
    assert main(["evaluate", "--quiet", "--quantized", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dfqvit: error:") and "checksum mismatch" in err and "\n" not in err
    assert main(["evaluate", "--quiet", "--quantized", str(path), "--model", "deit_tiny_patch16_224"]) == 2
    assert "does not match the quantized model" in capsys.readouterr().err
