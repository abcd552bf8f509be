"""/v1/models: the served models with their sizes, durations and defaults."""

from __future__ import annotations

from fastapi import APIRouter

from service.catalog import ServedModel
from service.deps import CatalogDep, PrincipalDep
from service.errors import ApiError
from service.schemas import ModelList, ModelPublic

router = APIRouter(prefix="/v1/models", tags=["models"])


def to_public(model: ServedModel) -> ModelPublic:
    return ModelPublic(
        id=model.name, sizes=model.sizes, seconds=model.seconds, fps=model.fps,
        default_size=model.default_size, default_seconds=model.default_seconds,
        default_steps=model.default_steps, default_guidance=model.default_guidance,
        max_steps=model.max_steps, qualities=model.qualities, remix=model.remix,
        remix_strength=model.remix_strength, description=model.description,
    )


@router.get("", response_model=ModelList)
async def list_models(_: PrincipalDep, catalog: CatalogDep) -> ModelList:
    return ModelList(data=[to_public(m) for m in catalog.models.values()])


@router.get("/{model_id}", response_model=ModelPublic)
async def retrieve_model(model_id: str, _: PrincipalDep, catalog: CatalogDep) -> ModelPublic:
    model = catalog.get(model_id)
    if model is None:
        raise ApiError(404, f"No model named '{model_id}'; served: {', '.join(catalog.names())}.",
                       code="model_not_found", param="model_id")
    return to_public(model)
