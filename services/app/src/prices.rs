//! Reading a product's price from the stock service, for `firePurchase`.
//!
//! The AP reads the price itself rather than trusting the caller with it: the amount charged is
//! `price * quantity`, computed here once so both bank branches move exactly the same amount.

use std::time::Duration;

use serde::Deserialize;

use crate::error::AppError;

/// How long a price lookup may take: it happens before any global transaction exists, so a slow
/// stock service only delays the answer, and failing fast costs nothing.
const PRICE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Deserialize)]
struct Product {
    price: i64,
}

/// The price of `product_id`, integer minor units, > 0, from `GET url` (the stock service's
/// `{STOCK_URL}/products/{product_id}`) on the AP's shared `http` client.
///
/// Errors: [`AppError::UnknownProduct`] on a 404; [`AppError::StockUnavailable`] when the
/// service cannot be reached, answers another error status, or an answer without a positive
/// integer `price` (a price of 0 would make an amount every bank refuses).
pub async fn price(http: &reqwest::Client, url: &str, product_id: i64) -> Result<i64, AppError> {
    let unavailable = |what: String| AppError::StockUnavailable {
        product_id,
        detail: format!("GET {url}: {what}"),
    };
    let response = (http.get(url).timeout(PRICE_TIMEOUT).send().await)
        .map_err(|e| unavailable(e.to_string()))?;
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        return Err(AppError::UnknownProduct { product_id });
    }
    let response = response
        .error_for_status()
        .map_err(|e| unavailable(e.to_string()))?;
    match response.json::<Product>().await {
        Ok(Product { price }) if price > 0 => Ok(price),
        Ok(Product { price }) => Err(unavailable(format!("price {price} is not > 0"))),
        Err(e) => Err(unavailable(format!("unreadable answer: {e}"))),
    }
}
