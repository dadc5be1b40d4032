"""A FastAPI app serving couponcore's REST API next to a route of its own.

uvicorn examples.fastapi_app:app
"""

from __future__ import annotations

import couponcore
from couponcore.fastapi import create_router, install_error_handlers
from fastapi import FastAPI

engine = couponcore.open("shop.db")
app = FastAPI(title="shop")
install_error_handlers(app)
app.include_router(create_router(engine), prefix="/coupons-api")


@app.get("/hello")
async def hello() -> dict[str, str]:
    return {"engine": engine.kind}
