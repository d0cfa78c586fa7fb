"""ldor-gateway: routes providers' leavers and joiners returns to each young person's home local authority."""

__version__ = "0.1.0"
