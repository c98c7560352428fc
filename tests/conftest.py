import pytest
import torch

from dfqvit.models import load_model


@pytest.fixture(scope="session")
def tiny():
    torch.set_num_threads(2)
    return load_model()


@pytest.fixture(scope="session")
def digits_heldout():
    from dfqvit.data import digits_split

    return digits_split("heldout")
