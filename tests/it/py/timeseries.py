# Seeded random fixtures for experiments/timeseries_sines*.yaml (argv[1]: the folder to write):
# a TorchScript denoiser of sequences [B, 5, 24] that outputs x̂0 (Diffusion-TS predicts the
# sample) and a TS2Vec-shaped TorchScript encoder [B, T, C] → [B, T, D].
import sys
import torch

out = sys.argv[1]
torch.manual_seed(0)


class Denoiser(torch.nn.Module):
    def __init__(self, c=5, h=16):
        super().__init__()
        self.inp = torch.nn.Conv1d(c, h, 3, padding=1)
        self.emb = torch.nn.Linear(1, h)
        self.out = torch.nn.Conv1d(h, c, 3, padding=1)

    def forward(self, x, t):
        e = self.emb((t.float() / 500.0).reshape(-1, 1)).unsqueeze(-1)
        return torch.tanh(self.out(torch.nn.functional.gelu(self.inp(x) + e)))


class Encoder(torch.nn.Module):
    # As TS2Vec's TSEncoder in shape: input projection, dilated convolutions over time.
    def __init__(self, c=5, d=16):
        super().__init__()
        self.inp = torch.nn.Conv1d(c, 16, 1)
        self.c1 = torch.nn.Conv1d(16, d, 3, padding=2, dilation=2)

    def forward(self, x):
        return self.c1(torch.nn.functional.gelu(self.inp(x.transpose(1, 2)))).transpose(1, 2)


torch.jit.script(Denoiser().eval()).save(f"{out}/denoiser.pt")
torch.jit.trace(Encoder().eval(), torch.zeros(2, 24, 5)).save(f"{out}/ts2vec.pt")
print("ok")
