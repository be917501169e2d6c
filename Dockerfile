# Circuit Breaker: both APIs under gunicorn with gevent workers.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GRAPHQL_HOST=0.0.0.0 \
    GRAPHQL_PORT=4000 \
    OPENAI_HOST=0.0.0.0 \
    OPENAI_PORT=3000

WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

COPY app.py wsgi.py gunicorn.conf.py .flaskenv ./
COPY cb ./cb
COPY blueprints ./blueprints
COPY schema ./schema
COPY commands ./commands

RUN useradd --create-home --uid 10001 circuitbreaker
USER circuitbreaker

EXPOSE 3000 4000
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:3000/health', timeout=2).status == 200 else 1)"
CMD ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:application"]
