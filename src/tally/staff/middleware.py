"""The methods the staff pages (and the admin) take: GET, HEAD and POST.

Their views are plain functions that treat every method but POST as a GET, so PUT,
DELETE, OPTIONS or TRACE rendered the page with a 200. Anything else is now a 405 with
`Allow`, before any session or database work. The API has its own JSON 405 (api.py).
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed

PAGE_METHODS = ("GET", "HEAD", "POST")
API_PREFIX = "/api/"


class PageMethodsMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method not in PAGE_METHODS and not request.path_info.startswith(API_PREFIX):
            return HttpResponseNotAllowed(PAGE_METHODS)
        return self.get_response(request)
