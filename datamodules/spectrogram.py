"""Log-mel spectrograms, MFCCs and SpecAugment masks of batches of waveforms, on whatever device they are on.

No per-clip Python work: one `torch.stft` over the batch, one matrix product with the mel filterbank.
The filterbank uses the HTK mel scale, mel(f) = 2595 log10(1 + f / 700), with triangles that peak at 1
(torchaudio's `MelSpectrogram` defaults, librosa's with `htk=True, norm=None`).
"""

from __future__ import annotations

import math

import torch


def hz_to_mel(hz: torch.Tensor) -> torch.Tensor:
    return 2595.0 * torch.log10(1.0 + hz / 700.0)


def mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_centres(n_mels: int, f_min: float, f_max: float) -> torch.Tensor:
    """(n_mels + 2,) frequencies in Hz, equally spaced in mel: each band's lower edge, centre and upper edge
    are three consecutive entries."""
    mels = torch.linspace(float(hz_to_mel(torch.tensor(f_min))), float(hz_to_mel(torch.tensor(f_max))), n_mels + 2)
    return mel_to_hz(mels.double())


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> torch.Tensor:
    """(n_mels, n_fft // 2 + 1): row m weighs the FFT bins with a triangle rising from edge m to centre m + 1
    and falling to edge m + 2 (of `mel_centres`), so neighbouring bands sum to 1 between their centres."""
    bins = torch.linspace(0.0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)  # (F,) bin frequencies
    edges = mel_centres(n_mels, f_min, f_max)  # (n_mels + 2,)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]  # (n_mels, 1) each
    rising = (bins - lower) / (centre - lower)
    falling = (upper - bins) / (upper - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0.0).float()  # (n_mels, F)


class LogMel:
    """Waveforms (B, L) in [-1, 1] -> log-mel spectrograms (B, n_mels, L // hop_length).

    Frames are centred (frame t covers samples t * hop_length +- n_fft / 2, zero-padded at the ends); the
    frame past the last full hop is dropped, so a clip of L samples has exactly L // hop_length frames.
    Power spectrum, mel filterbank, then log(mel + 1e-6): the floor keeps digital silence finite.
    """

    def __init__(self, sample_rate: int, n_fft: int, hop_length: int, n_mels: int, f_min: float, f_max: float):
        if not 0 <= f_min < f_max <= sample_rate / 2:
            raise ValueError(f"need 0 <= f_min < f_max <= sample_rate / 2, got {f_min}, {f_max}, {sample_rate}")
        self.n_fft, self.hop_length = n_fft, hop_length
        self.filterbank = mel_filterbank(sample_rate, n_fft, n_mels, f_min, f_max)  # (n_mels, F)
        self.window = torch.hann_window(n_fft)
        self.on_device: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def frames(self, samples: int) -> int:
        return samples // self.hop_length

    def __call__(self, waveforms: torch.Tensor) -> torch.Tensor:
        device = waveforms.device
        if device not in self.on_device:  # moved once per device, like the image normaliser
            self.on_device[device] = (self.filterbank.to(device), self.window.to(device))
        filterbank, window = self.on_device[device]
        spectrum = torch.stft(
            waveforms.float(),  # never in bf16/fp16: the power spectrum spans many orders of magnitude
            self.n_fft,
            self.hop_length,
            window=window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )  # (B, F, L // hop + 1)
        power = spectrum[..., : self.frames(waveforms.shape[-1])].abs().square()
        return torch.log(filterbank @ power + 1e-6)  # (n_mels, F) @ (B, F, T) -> (B, n_mels, T)


def dct_matrix(n_mfcc: int, n_mels: int) -> torch.Tensor:
    """(n_mfcc, n_mels) orthonormal DCT-II: MFCCs are this times the log-mel column of each frame."""
    k = torch.arange(n_mfcc, dtype=torch.float64)[:, None]
    n = torch.arange(n_mels, dtype=torch.float64)[None, :]
    basis = torch.cos(math.pi / n_mels * (n + 0.5) * k) * math.sqrt(2.0 / n_mels)
    basis[0] /= math.sqrt(2.0)
    return basis.float()


def mfcc(log_mel: torch.Tensor, n_mfcc: int = 13) -> torch.Tensor:
    """(B, n_mels, T) log-mel -> (B, n_mfcc, T) mel-frequency cepstral coefficients."""
    return dct_matrix(n_mfcc, log_mel.shape[1]).to(log_mel.device) @ log_mel


def band_masks(batch: int, size: int, count: int, max_width: int, device: torch.device) -> torch.Tensor:
    """(B, size) True inside any of `count` bands per row, each of a width drawn from 0..max_width and a
    start drawn so that it fits (the same distribution as torchaudio's `FrequencyMasking`/`TimeMasking`)."""
    max_width = min(max_width, size)
    width = torch.randint(0, max_width + 1, (batch, count, 1), device=device)
    start = (torch.rand(batch, count, 1, device=device) * (size - width + 1)).floor()
    position = torch.arange(size, device=device)  # (size,)
    return ((position >= start) & (position < start + width)).any(1)  # (B, count, size) -> (B, size)


def spec_augment(
    features: torch.Tensor, freq_masks: int, freq_width: int, time_masks: int, time_width: int
) -> torch.Tensor:
    """SpecAugment's masking (Park et al., 2019) of normalised log-mels (B, n_mels, T): `freq_masks` bands of
    mel bins and `time_masks` bands of frames per clip set to 0, the training mean. No time warping."""
    batch, n_mels, frames = features.shape
    masked = band_masks(batch, n_mels, freq_masks, freq_width, features.device)[:, :, None]  # (B, n_mels, 1)
    masked = masked | band_masks(batch, frames, time_masks, time_width, features.device)[:, None, :]  # (B, M, T)
    return features.masked_fill(masked, 0.0)
