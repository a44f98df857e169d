from testviper.tasks import ns

__all__ = ["ns"]
