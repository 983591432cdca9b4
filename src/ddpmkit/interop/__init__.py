"""ddpmkit models in other tools' formats: diffusers.py maps a ResNet-block U-Net and its
schedule to diffusers' UNet2DModel and DDPMScheduler and back. diffusers (the optional
extra ddpmkit[diffusers]) is imported only inside the functions that need it."""
