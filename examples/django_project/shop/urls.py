from django.urls import include, path

urlpatterns = [
    path("api/", include("couponcore.django.urls")),
    # The ops page: on when COUPONCORE["OPERATOR_KEY"] or COUPONCORE_OPERATOR_KEY is set, else 404.
    path("ops/", include("couponcore.django.ops")),
]
