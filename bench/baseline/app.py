"""Baseline FCFS issue service: FastAPI + redis.asyncio, one Lua call per request.

Run: uvicorn bench.baseline.app:app  (env BASELINE_REDIS_URL, BASELINE_PREFIX)
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

REDIS_URL = os.environ.get("BASELINE_REDIS_URL", "redis://127.0.0.1:6379/0")
PREFIX = os.environ.get("BASELINE_PREFIX", "baseline:")

# KEYS: quantity, issued counter, holders set, stream. ARGV: user_id, now_ms.
ISSUE_LUA = """
local quantity = tonumber(redis.call('GET', KEYS[1]))
if not quantity then return {-1, 0} end
if redis.call('SISMEMBER', KEYS[3], ARGV[1]) == 1 then return {2, 0} end
local issued = tonumber(redis.call('GET', KEYS[2]) or '0')
if issued >= quantity then return {1, 0} end
local seq = redis.call('INCR', KEYS[2])
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('XADD', KEYS[4], '*', 'seq', seq, 'user', ARGV[1], 't', ARGV[2])
return {0, seq}
"""
STATUS = {0: "ISSUED", 1: "SOLD_OUT", 2: "ALREADY_ISSUED"}

state: dict[str, Any] = {}


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    state["redis"] = aioredis.from_url(REDIS_URL, max_connections=512)
    state["issue"] = state["redis"].register_script(ISSUE_LUA)
    yield
    await state["redis"].aclose()


app = FastAPI(title="baseline issue service", lifespan=lifespan)


def keys(campaign_id: int) -> list[str]:
    tag = f"{PREFIX}{{c{campaign_id}}}"
    return [f"{tag}:quantity", f"{tag}:issued", f"{tag}:holders", f"{tag}:grants"]


class CampaignIn(BaseModel):
    id: int
    quantity: int


class IssueIn(BaseModel):
    user_id: str


@app.post("/campaigns")
async def create_campaign(body: CampaignIn) -> dict[str, Any]:
    r = state["redis"]
    k = keys(body.id)
    await r.delete(*k)
    await r.set(k[0], body.quantity)
    try:
        await r.xgroup_create(k[3], "writers", id="0", mkstream=True)
    except aioredis.ResponseError:
        pass
    return {"id": body.id, "quantity": body.quantity}


@app.post("/campaigns/{campaign_id}/issue")
async def issue(campaign_id: int, body: IssueIn) -> dict[str, Any]:
    code, seq = await state["issue"](keys=keys(campaign_id), args=[body.user_id, int(time.time() * 1000)])
    if code == -1:
        raise HTTPException(status_code=404, detail="campaign not found")
    return {"status": STATUS[code], "seq": seq or None}
