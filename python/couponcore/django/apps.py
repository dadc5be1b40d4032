from django.apps import AppConfig


class CouponcoreConfig(AppConfig):
    name = "couponcore.django"
    label = "couponcore"
    verbose_name = "couponcore"
