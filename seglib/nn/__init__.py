"""Networks and losses: the U-Net (2D/3D, ``conv`` 3d or 2+1d) and MONAI's U-Net++ (``unet``), their
blocks (``blocks``), and the losses (``losses``: MONAI's where it has them, ours in ``custom_losses``)."""
