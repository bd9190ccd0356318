from django.contrib import admin
from django.urls import include, path

from tally.api.api import urls as api_urls

# A database that cannot be reached is a 503, also when a middleware meets it (tally.unavailable).
handler500 = "tally.unavailable.server_error"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", api_urls()),
    # The staff web app at the site root: "/" is its home (Today once signed in).
    path("", include("tally.staff.urls")),
]
