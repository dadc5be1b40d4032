"""URL patterns of the couponcore REST API: ``path("api/", include("couponcore.django.urls"))``."""

from django.urls import path

from . import views

app_name = "couponcore"

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("metrics", views.metrics, name="metrics"),
    path("campaigns", views.campaigns, name="campaigns"),
    path("campaigns/<int:campaign_id>", views.campaign, name="campaign"),
    path("campaigns/<int:campaign_id>/pause", views.campaign_action["pause"], name="campaign-pause"),
    path("campaigns/<int:campaign_id>/resume", views.campaign_action["resume"], name="campaign-resume"),
    path("campaigns/<int:campaign_id>/close", views.campaign_action["close"], name="campaign-close"),
    path("campaigns/<int:campaign_id>/quantity", views.campaign_quantity, name="campaign-quantity"),
    path("campaigns/<int:campaign_id>/rate-limits", views.campaign_rate_limits, name="campaign-rate-limits"),
    path("campaigns/<int:campaign_id>/stats", views.campaign_stats, name="campaign-stats"),
    path("campaigns/<int:campaign_id>/counts", views.campaign_counts, name="campaign-counts"),
    path("campaigns/<int:campaign_id>/issue", views.issue, name="issue"),
    path("coupons/<int:coupon_id>", views.coupon, name="coupon"),
    path("coupons/<int:coupon_id>/use", views.coupon_use, name="coupon-use"),
    path("coupons/<int:coupon_id>/cancel", views.coupon_cancel, name="coupon-cancel"),
    path("users/<str:user_id>/coupons", views.user_coupons, name="user-coupons"),
    path("users/<str:user_id>/points", views.points_balance, name="points-balance"),
    path("users/<str:user_id>/points/history", views.points_history, name="points-history"),
    path("users/<str:user_id>/points/earn", views.points_earn, name="points-earn"),
    path("users/<str:user_id>/points/use", views.points_use, name="points-use"),
    path("users/<str:user_id>/points/cancel", views.points_cancel, name="points-cancel"),
    path("users/<str:user_id>/points/transfer", views.points_transfer, name="points-transfer"),
    path("checkout", views.checkout, name="checkout"),
    path("checkout/cancel", views.cancel_checkout, name="checkout-cancel"),
]
